// Pieces of the record pane: a record's facts, the ttl field, and the checks made before
// anything is sent (the server checks again, and its answer is shown when it refuses).

import { h, remaining } from "./dom.js";

export function heading(key) {
  return h("h2", { class: "key", text: key });
}

// Revision and expiry (with the time left, which app.js updates every second).
export function facts(record) {
  let expiry = ["never"];
  if (record.expires_at) {
    const left = h("span", {
      class: "remaining",
      dataset: { expires: record.expires_at },
      text: remaining(record.expires_at),
    });
    expiry = [h("time", { datetime: record.expires_at, text: record.expires_at }), " (", left, ")"];
  }
  return h(
    "dl",
    { class: "facts" },
    h("dt", { text: "Revision" }),
    h("dd", { class: "revision", text: String(record.revision) }),
    h("dt", { text: "Expires" }),
    h("dd", { class: "expiry" }, ...expiry),
  );
}

// An optional ttl in seconds; `onChange` gets the text as typed.
export function ttlField(id, initial, onChange, { keepsExpiry = false } = {}) {
  const hint = keepsExpiry
    ? "Filled in to keep about the current expiry; empty: the key never expires."
    : "Empty: the key never expires.";
  const input = h("input", {
    id,
    type: "number",
    min: "0.001",
    step: "any",
    inputmode: "decimal",
    value: initial,
    "aria-describedby": `${id}-hint`,
    oninput: (event) => onChange(event.target.value),
  });
  return h(
    "div",
    { class: "ttl" },
    h("label", { for: id, text: "ttl in seconds (optional)" }),
    input,
    h("p", { id: `${id}-hint`, class: "hint", text: hint }),
  );
}

export function ttlValue(text) {
  return text === "" || text === undefined ? null : Number(text);
}

// Checks `textarea` as JSON and says why not in `box`: always when `now`, else only once it
// has said so (no error while a first value is being typed). True when it is not JSON.
export function jsonProblem(textarea, box, now) {
  try {
    JSON.parse(textarea.value);
    textarea.removeAttribute("aria-invalid");
    box.textContent = "";
    return false;
  } catch (error) {
    if (now || textarea.getAttribute("aria-invalid") === "true") {
      textarea.setAttribute("aria-invalid", "true");
      box.textContent = `Not valid JSON: ${error.message}`;
    }
    return true;
  }
}

// The key rules a person may break while typing (CONTRACT, "Key").
export function keyProblem(key) {
  if (key === "") return "A key cannot be empty.";
  if (key.endsWith("/")) return "A key cannot end with /.";
  if (/[\u0000-\u001f\u007f]/.test(key)) return "A key cannot hold control characters.";
  if (new TextEncoder().encode(key).length > 1024) return "A key is at most 1024 bytes of UTF-8.";
  return null;
}

export function valueEditor(id, text, errorId, onInput) {
  return h("textarea", {
    id,
    rows: "12",
    spellcheck: "false",
    autocomplete: "off",
    "aria-describedby": errorId,
    value: text,
    oninput: onInput,
  });
}

export function button(text, onclick, { danger = false, submit = false } = {}) {
  return h("button", {
    type: submit ? "submit" : "button",
    class: danger ? "danger" : undefined,
    text,
    onclick,
  });
}
