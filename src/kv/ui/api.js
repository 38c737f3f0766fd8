// kv's HTTP API as the page uses it: every call carries the token when one is kept, and a
// failure is an ApiError holding the status and the problem+json body.

const TOKEN_KEY = "kv.token";

// The token lives in sessionStorage: it survives a reload, not the closing of the tab.
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `the server answered ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// 401: the page goes back to asking for the token.
export class Unauthorized extends ApiError {}

// Values may hold integers beyond 2^53, which JSON.parse would round. Where the browser has
// JSON.rawJSON (Chromium, Firefox), a number whose text would not survive the round trip is
// kept as its source text, so it is shown and sent back exactly.
const exactNumbers =
  typeof JSON.rawJSON === "function"
    ? (_, value, context) =>
        typeof value === "number" && context?.source !== undefined &&
        JSON.stringify(value) !== context.source
          ? JSON.rawJSON(context.source)
          : value
    : undefined;

export function parseJson(text) {
  return JSON.parse(text, exactNumbers);
}

export function prettyJson(value) {
  return JSON.stringify(value, null, 2);
}

async function request(method, path, { body, revision, signal } = {}) {
  const headers = {};
  const kept = token.get();
  if (kept) headers.authorization = `Bearer ${kept}`;
  if (revision !== undefined) headers["if-match"] = `"${revision}"`;
  const response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  if (response.ok) return response;
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // not problem+json (a proxy's page, say): the status says enough
  }
  throw new (response.status === 401 ? Unauthorized : ApiError)(response.status, problem);
}

async function json(method, path, options) {
  return parseJson(await (await request(method, path, options)).text());
}

// The body of a write, with the value as the user typed it (already checked to be JSON):
// spliced in as text, so that its numbers are sent exactly as written.
function writeBody(fields, valueText, ttl) {
  const head = JSON.stringify(fields).slice(0, -1);
  const ttlPart = ttl === null || ttl === undefined ? "" : `,"ttl":${JSON.stringify(ttl)}`;
  return `${head}${head.length > 1 ? "," : ""}"value":${valueText}${ttlPart}}`;
}

// A browser removes "." and ".." segments from a URL, encoded or not, so the keys "." and
// ".." cannot be named in /kv/{key}; the page reaches them through /txn instead, whose
// put and delete take the same revision condition.
function itemPath(key) {
  return key === "." || key === ".." ? null : `/kv/${encodeURIComponent(key)}`;
}

async function transact(opText) {
  try {
    return (await json("POST", "/txn", { body: `{"ops":[${opText}]}` })).results[0];
  } catch (error) {
    const reason = error.problem?.reason;
    if (error.status === 409 && reason === "not_found") throw new ApiError(404, error.problem);
    if (error.status === 409 && reason === "revision_mismatch") {
      throw new ApiError(412, error.problem);
    }
    throw error;
  }
}

export function list(prefix, { limit, cursor } = {}) {
  const query = new URLSearchParams({ prefix });
  if (limit) query.set("limit", String(limit));
  if (cursor) query.set("cursor", cursor);
  return json("GET", `/kv?${query}`);
}

export async function get(key) {
  const path = itemPath(key);
  if (path) return json("GET", path);
  const record = await transact(JSON.stringify({ op: "get", key }));
  if (record === null) throw new ApiError(404, { detail: "no such key" });
  return record;
}

export function create(key, valueText, ttl) {
  return json("POST", "/kv", { body: writeBody({ key }, valueText, ttl) });
}

// Overwrites only if the record is still at `revision` (412 otherwise, 404 if gone).
export async function put(key, valueText, revision, ttl) {
  const path = itemPath(key);
  if (path) return json("PUT", path, { body: writeBody({}, valueText, ttl), revision });
  return transact(writeBody({ op: "put", key, if_revision: revision }, valueText, ttl));
}

export async function remove(key, revision) {
  const path = itemPath(key);
  if (path) return json("DELETE", path, { revision });
  return transact(JSON.stringify({ op: "delete", key, if_revision: revision }));
}

// The open watch stream of `prefix` (its body is read by live.js).
export function watch(prefix, signal) {
  return request("GET", `/watch?${new URLSearchParams({ prefix })}`, { signal });
}
