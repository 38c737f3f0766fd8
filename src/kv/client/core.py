"""The rules of talking to kv, without I/O: what request each operation sends and what its
answer means. `Client` and `AsyncClient` only carry these requests over httpx, so the two
cannot differ in how they encode a key, read an error or decide to retry.

A `Call` pairs a `Request` with the parser of its `Reply`; the parser returns the result or
raises the typed error (kv.client.errors) the reply stands for.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kv.client import errors
from kv.client.model import (
    TXN_OPS,
    Deleted,
    Entry,
    JSONValue,
    Page,
    Record,
    Seconds,
    TxnOp,
    TxnResult,
    encode_json,
    parse_checked,
    parse_deleted,
    parse_entry,
    parse_record,
    ttl_seconds,
)
from kv.client.retry import parse_retry_after
from kv.client.urls import encode_key, query

T = TypeVar("T")

MAX_PAGE = 1000

# --- requests and replies -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # path and query, percent-encoded, under the endpoint's path
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    retry: bool = False  # an idempotent read: may be sent again after a 503

    def __str__(self) -> str:
        return f"{self.method} {self.target}"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # names in lower case (httpx.Headers looks up any case)
    content: bytes


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    request: Request
    parse: Callable[[Reply], T]


def item_path(key: str, surface: str = "/kv") -> str:
    return f"{surface}/{encode_key(key)}"


def _write_body(fields: dict[str, Any], ttl: Seconds | None) -> bytes:
    if ttl is not None:
        fields["ttl"] = ttl_seconds(ttl)
    return encode_json(fields)


def _if_match(revision: int | None) -> tuple[tuple[str, str], ...]:
    return () if revision is None else (("if-match", f'"{revision}"'),)


def get(key: str, *, surface: str = "/kv") -> Call[Record]:
    return Call(Request("GET", item_path(key, surface), retry=True), _record)


def create(
    key: str, value: JSONValue, *, ttl: Seconds | None = None, surface: str = "/kv"
) -> Call[Record]:
    """POST /kv (or /v1/): create `key` at revision 1; KeyExists when present."""
    body = _write_body({"key": key, "value": value}, ttl)
    return Call(Request("POST", surface if surface == "/kv" else surface + "/", body), _record)


def put(
    key: str,
    value: JSONValue,
    *,
    if_revision: int | None = None,
    ttl: Seconds | None = None,
    surface: str = "/kv",
) -> Call[Record]:
    """PUT /kv/{key}: overwrite a present key (at `if_revision`); on /v1, create or overwrite."""
    body = _write_body({"value": value}, ttl)
    return Call(Request("PUT", item_path(key, surface), body, _if_match(if_revision)), _record)


def delete(key: str, *, if_revision: int | None = None, surface: str = "/kv") -> Call[Deleted]:
    request = Request("DELETE", item_path(key, surface), headers=_if_match(if_revision))
    return Call(request, lambda reply: _parsed(reply, parse_deleted))


def list_page(
    prefix: str, *, values: bool = False, limit: int | None = None, cursor: str | None = None
) -> Call[Page]:
    target = "/kv" + query(
        prefix=prefix or None,
        limit=limit,
        cursor=cursor,
        values="true" if values else None,
    )
    return Call(Request("GET", target, retry=True), _page)


def txn(ops: Sequence[TxnOp | Mapping[str, Any]]) -> Call[list[TxnResult]]:
    """POST /txn. `ops` may also be operations as JSON objects (as `kv txn` reads them),
    sent as they are: the server names the index of one it refuses."""
    body = encode_json({"ops": [op.as_json() if isinstance(op, TXN_OPS) else op for op in ops]})
    kinds = [_kind(op) for op in ops]

    def parse(reply: Reply) -> list[TxnResult]:
        results = _parsed(reply, lambda data: data["results"])
        if not isinstance(results, list) or len(results) != len(kinds):
            raise _unexpected(reply, f"expected {len(kinds)} results, got {results!r}"[:300])
        return [_result(reply, kind, result) for kind, result in zip(kinds, results, strict=True)]

    return Call(Request("POST", "/txn", body), parse)


def service_info() -> Call[dict[str, Any]]:
    """GET /: the service's name, version and backend (open without a token)."""

    def parse(reply: Reply) -> dict[str, Any]:
        return _parsed(reply, lambda data: dict(data))

    return Call(Request("GET", "/", retry=True), parse)


def watch_request(*, prefix: str | None = None, key: str | None = None) -> Request:
    """GET /watch?prefix=P (P "" for every key) or ?key=K: exactly one of the two."""
    if (prefix is None) == (key is None):
        raise ValueError('watch exactly one of a prefix ("" for every key) or a key')
    target = "/watch" + (query(key=key) if key is not None else query(prefix=prefix))
    return Request("GET", target, headers=(("accept", "text/event-stream"),))


def _kind(op: object) -> object:
    if isinstance(op, TXN_OPS):
        return op.as_json()["op"]
    return op.get("op") if isinstance(op, Mapping) else None


def _result(reply: Reply, kind: object, data: object) -> TxnResult:
    try:
        if kind in ("create", "put"):
            return parse_record(data)
        if kind == "get":
            return None if data is None else parse_record(data)
        if kind == "delete":
            return parse_deleted(data)
        return parse_checked(data)
    except ValueError as exc:
        raise _unexpected(reply, f"a {kind} result: {exc}") from None


class ListCursor:
    """Where a listing is: the call of its next page, and how many items are still wanted."""

    def __init__(self, prefix: str, values: bool, page_size: int, limit: int | None) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size must be from 1 to {MAX_PAGE}, not {page_size}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be at least 0, not {limit}")
        self.prefix = prefix
        self.values = values
        self.page_size = page_size
        self.wanted = limit
        self.cursor: str | None = None
        self.done = limit == 0

    def next_call(self) -> Call[Page] | None:
        """The call of the next page, None when the listing is over."""
        if self.done:
            return None
        size = self.page_size if self.wanted is None else min(self.page_size, self.wanted)
        return list_page(self.prefix, values=self.values, limit=size, cursor=self.cursor)

    def take(self, page: Page) -> list[Entry | Record]:
        """The items of `page` the caller gets; moves past it."""
        items = page.items if self.wanted is None else page.items[: self.wanted]
        if self.wanted is not None:
            self.wanted -= len(items)
        self.cursor = page.next
        self.done = page.next is None or self.wanted == 0
        return items


# --- reading replies ------------------------------------------------------------------------


def _record(reply: Reply) -> Record:
    record = _parsed(reply, parse_record)
    etag = reply.headers.get("etag")
    if etag is not None and etag != f'"{record.revision}"':
        raise _unexpected(reply, f"ETag {etag} differs from the revision {record.revision}")
    return record


def _page(reply: Reply) -> Page:
    def parse(data: Any) -> Page:
        items, following = data["items"], data["next"]
        if not isinstance(items, list) or not (following is None or isinstance(following, str)):
            raise ValueError("items must be a list and next a string or null")
        return Page([parse_entry(item) for item in items], following)

    return _parsed(reply, parse)


def _parsed(reply: Reply, parse: Callable[[Any], T]) -> T:
    """The 200 reply's JSON body through `parse`; the typed error of any other reply."""
    if reply.status != 200:
        raise error_of(reply)
    try:
        return parse(json.loads(reply.content))
    except (ValueError, KeyError, TypeError) as exc:
        raise _unexpected(reply, f"a 200 whose body kv does not send ({exc})") from None


def _unexpected(reply: Reply, detail: str) -> errors.UnexpectedResponse:
    return errors.UnexpectedResponse(detail, status=reply.status)


def problem_of(reply: Reply) -> dict[str, Any]:
    """The reply's problem+json body as a dict; {} when it is not one."""
    try:
        body = json.loads(reply.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_of(reply: Reply) -> errors.KVError:
    """The typed error a non-200 reply stands for, built from its problem+json body."""
    problem = problem_of(reply)
    status = reply.status
    detail = problem.get("detail")
    if not isinstance(detail, str) or not detail:
        text = reply.content[:200].decode("utf-8", "replace").strip()
        detail = f"HTTP {status}" + (f": {text}" if text else "")
    key = problem.get("key") if isinstance(problem.get("key"), str) else None
    fields: dict[str, Any] = {
        "status": status,
        "title": str(problem.get("title", "")),
        "key": key,
        "problem": problem,
    }
    index = problem.get("index")
    index = index if isinstance(index, int) and not isinstance(index, bool) else None
    match status:
        case 400:
            return errors.BadRequest(detail, index=index, **fields)
        case 401:
            return errors.Unauthorized(detail, **fields)
        case 404 if key is not None:
            return errors.KeyNotFound(detail, **fields)
        case 409 if problem.get("reason") in errors.TXN_REASONS and index is not None:
            return errors.TransactionFailed(
                detail, index=index, reason=str(problem["reason"]), **fields
            )
        case 409:
            return errors.KeyExists(detail, **fields)
        case 412:
            return errors.RevisionMismatch(detail, **fields)
        case 413:
            return errors.PayloadTooLarge(detail, **fields)
        case 503:
            retry_after = parse_retry_after(reply.headers.get("retry-after"))
            return errors.Unavailable(detail, retry_after=retry_after, **fields)
    return errors.UnexpectedResponse(detail, **fields)


def finish(call: Call[T], reply: Reply) -> T:
    """The result of `call` from its final `reply`; its error names the request it answered."""
    try:
        return call.parse(reply)
    except errors.KVError as error:
        error.request = str(call.request)
        raise
