"""Reading a request: its body, JSON, key, conditions and query, without building Starlette's
Request (the hot path's cost) and without leaving the HTTP layer."""

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope

from kv.container import Settings
from kv.domain.commands import ANY_REVISION, Condition
from kv.domain.errors import InvalidKey
from kv.domain.model import MAX_VALUE_DEPTH, NO_REVISION, Key, parse_key, validate_value
from kv.domain.service import KVService
from kv.entrypoints.problems import BadRequest, PayloadTooLarge

# orjson reads integers beyond 64 bits as floats; a run of 20+ digits sends the body to the
# standard library, which keeps them exact.
_LONG_DIGITS = re.compile(rb"[0-9]{20}")
_NOT_UTF8 = "the key in the URL is not valid UTF-8"


class Stream(Response):
    """A response that goes on until it ends by itself (a watch); the operation log records
    its opening as a line of its own, then its end."""

    def __init__(self) -> None:
        self.status_code = 200
        self.background = None


class Call:
    """One request to one operation, as its handler sees it.

    The handler names the key it works on (`key`) and the size of the value it read or wrote
    (`size`) here, for the operation log; `extra` holds what an operation adds to its line.
    """

    __slots__ = ("extra", "key", "outcome", "prefix", "receive", "scope", "size")

    def __init__(self, scope: Scope, receive: Receive, prefix: bytes = b"") -> None:
        self.scope = scope
        self.receive = receive
        self.prefix = prefix  # the route's path up to its `{key}`, for `path_key`
        self.key: str | None = None
        self.size: int | None = None
        self.outcome: str | None = None  # when the status's own is not precise enough
        self.extra: dict[str, Any] | None = None

    @property
    def service(self) -> KVService:
        service: KVService = self.scope["state"]["service"]
        return service

    @property
    def settings(self) -> Settings:
        settings: Settings = self.scope["state"]["settings"]
        return settings

    def header(self, name: bytes) -> bytes | None:
        """The value of header `name` (lower case), None when absent; 400 when repeated."""
        found = None
        for header, value in self.scope["headers"]:
            if header == name:
                if found is not None:
                    raise BadRequest(f"the {name.decode()} header must appear at most once")
                found = value
        return found

    def path_key(self) -> Key:
        """The key in the URL (the route's `key` parameter), percent-decoded as UTF-8.

        Read from `raw_path` (which starts with the route's prefix as sent: see
        OperationsOfPath), so that invalid UTF-8 is a 400 rather than a replacement character.
        """
        scope, prefix = self.scope, self.prefix
        raw: bytes | None = scope.get("raw_path")
        if raw is None:  # not given by every server; the decoded path then
            raw_key: str = scope["path"][len(prefix) :]
        else:
            raw = raw[len(prefix) :]
            try:
                raw_key = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidKey(None, _NOT_UTF8) from None
        self.key = raw_key
        return parse_key(raw_key)

    def if_match(self) -> Condition:
        """The condition of an `If-Match` header: a revision, `*`, or None without one."""
        value = self.header(b"if-match")
        if value is None:
            return None
        header = value.decode("latin-1")
        tag = header.strip()
        if tag == "*":
            return ANY_REVISION
        digits = tag[1:-1]
        # isascii: str.isdigit() is also true for "²", which int() refuses.
        if len(tag) > 2 and tag[0] == tag[-1] == '"' and digits.isascii() and digits.isdigit():
            # No revision has 20 digits (they are 64-bit), and int() refuses more than 4300.
            return int(digits) if len(digits.lstrip("0")) < 20 else NO_REVISION
        if tag.startswith('W/"'):
            return NO_REVISION  # a weak tag never matches: If-Match uses strong comparison
        raise BadRequest(f'If-Match must be one entity tag such as "3" (or *), not {header!r}')

    def query(self, allowed: tuple[str, ...]) -> dict[str, str]:
        """The query parameters, each at most once and each one of `allowed` (else 400)."""
        found: dict[str, str] = {}
        text = self.scope["query_string"].decode("latin-1")
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest("the query string is not valid UTF-8") from None
        for name, value in pairs:
            if name not in allowed:
                raise BadRequest(f"unknown query parameter {name!r}; allowed: {', '.join(allowed)}")
            if name in found:
                raise BadRequest(f"the query parameter {name!r} is given more than once")
            found[name] = value
        return found

    async def body(self) -> bytes:
        """The whole body, refused with 413 as soon as it is known to exceed the limit.

        Counted while it streams in, so a huge body is never held in memory.
        """
        limit = self.settings.max_body_bytes
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(limit)
        body = b""
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                body = body + chunk if body else chunk
                if len(body) > limit:
                    raise PayloadTooLarge(limit)
            if not message.get("more_body", False):
                return body

    async def json_object(
        self, allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> tuple[dict[str, Any], bytes]:
        """The body as a JSON object with only `allowed` fields and every `required` one."""
        body = await self.body()
        data = parse_json(body)
        if not isinstance(data, dict):
            raise BadRequest(f"the body must be a JSON object with the fields {', '.join(allowed)}")
        unknown = [name for name in data if name not in allowed]
        if unknown:
            raise BadRequest(
                f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
            )
        missing = [name for name in required if name not in data]
        if missing:
            raise BadRequest(f"missing field(s) {', '.join(map(repr, missing))}")
        return data, body


def parse_json(body: bytes) -> Any:
    """Decode a request body strictly: UTF-8, one document, no NaN or Infinity."""
    if not _LONG_DIGITS.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
    try:
        return json.loads(
            body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is too large to store")
    return number


def encode_value(value: Any, body: bytes) -> str:
    """The compact JSON text stored for `value`, decoded from `body` (after the depth rule)."""
    # A value cannot nest deeper than its body has brackets: most bodies need no walk.
    if body.count(b"[") + body.count(b"{") > MAX_VALUE_DEPTH:
        validate_value(value)
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits, which orjson cannot write.
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"the value cannot be stored as JSON: {exc}") from None
        return text


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
