"""Reading a request: its body, JSON, key, conditions and query, without building Starlette's
Request (the hot path's cost) and without leaving the HTTP layer."""

import re
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope

from kv.container import Settings
from kv.domain.commands import ANY_REVISION, Condition
from kv.domain.errors import InvalidKey
from kv.domain.model import NO_REVISION, Key, parse_key
from kv.domain.service import KVService
from kv.entrypoints import bodies
from kv.entrypoints.bodies import parse_json
from kv.entrypoints.problems import BadRequest, PayloadTooLarge

_NOT_UTF8 = "the key in the URL is not valid UTF-8"
# If-None-Match on a read: `*` or a list of entity tags, weak or strong (RFC 9110 §8.8.3);
# the opaque tags (`"3"`) are what a weak comparison compares.
_ENTITY_TAG = r'\s*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*'
_ENTITY_TAGS = re.compile(f"{_ENTITY_TAG}(?:,{_ENTITY_TAG})*")
_OPAQUE_TAGS = re.compile(_ENTITY_TAG)


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

    def conditions(self) -> tuple[Condition, str | None]:
        """The request's `If-Match`, as a condition (None without one), and its
        `If-None-Match` as sent (stripped; None without one), read in one pass over the
        headers. Each may appear once: two lines of either are a 400, as a list is."""
        if_match = if_none_match = None
        for name, value in self.scope["headers"]:
            if name == b"if-match":
                if if_match is not None:
                    raise BadRequest("the if-match header must appear at most once")
                if_match = value
            elif name == b"if-none-match":
                if if_none_match is not None:
                    raise BadRequest("the if-none-match header must appear at most once")
                if_none_match = value
        return (
            None if if_match is None else if_match_condition(if_match.decode("latin-1")),
            None if if_none_match is None else if_none_match.decode("latin-1").strip(),
        )

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

        Counted while it streams in, so a huge body is never held in memory; joined once at
        the end (appending each chunk to the body so far copied it again and again).
        """
        limit = self.settings.max_body_bytes
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def value_body(
        self, allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> tuple[dict[str, Any], str]:
        """The body, a JSON object with only `allowed` fields (`value` among them) and every
        `required` one: its other fields, and `value` encoded as the JSON text to store.

        The body and everything parsed from it but the returned fields are gone when this
        returns, so that a request waiting for the backend holds only the encoded value
        (README, Limits: 350k `[]` once held ~26 MiB per request).
        """
        return bodies.read_value_body(await self.body(), allowed, required)

    async def json_object(
        self, allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> tuple[dict[str, Any], bytes]:
        """The body as a JSON object with only `allowed` fields and every `required` one."""
        body = await self.body()
        data = parse_json(body)
        bodies.check_fields(data, allowed, required)
        return data, body


def if_match_condition(header: str) -> Condition:
    """The condition of an `If-Match` header: a revision, or `*`.

    Entity tags compare strongly, character by character (RFC 9110 §8.8.3.2): only `"3"`
    matches the ETag `"3"`; `"03"` and the weak `W/"3"` match no revision (412).
    """
    tag = header.strip()
    if tag == "*":
        return ANY_REVISION
    digits = tag[1:-1]
    # isascii: str.isdigit() is also true for "²", which int() refuses.
    if len(tag) > 2 and tag[0] == tag[-1] == '"' and digits.isascii() and digits.isdigit():
        # ETags are written without leading zeros; no revision has 20 digits (they are
        # 64-bit), and int() refuses more than 4300.
        if digits[0] == "0" or len(digits) >= 20:
            return NO_REVISION
        return int(digits)
    if tag.startswith('W/"'):
        return NO_REVISION  # a weak tag never matches: If-Match uses strong comparison
    raise BadRequest(f'If-Match must be one entity tag such as "3" (or *), not {header!r}')


def only_if_absent(if_none_match: str | None, if_match: Condition) -> bool:
    """Whether a write's `If-None-Match` makes it create-only: `*`, and no `If-Match`.

    A write takes no other If-None-Match (400): with a tag list it would mean "unless at one
    of these revisions", which the backends cannot check atomically. With If-Match too, the
    request could never succeed (the key would have to exist and be absent): 400 as well.
    """
    if if_none_match is None:
        return False
    if if_none_match != "*":
        raise BadRequest(f"If-None-Match on a write must be * (create only), not {if_none_match!r}")
    if if_match is not None:
        raise BadRequest("If-Match and If-None-Match: * cannot both hold: send one of them")
    return True


NoneMatch = frozenset[str] | Literal["*"]
"""A read's `If-None-Match`: `*`, or the opaque tags it lists (`'"3"'`)."""


def none_match_tags(if_none_match: str) -> NoneMatch:
    """The entity tags of a read's `If-None-Match` header; 400 when malformed."""
    if if_none_match == "*":
        return ANY_REVISION
    if not _ENTITY_TAGS.fullmatch(if_none_match):
        raise BadRequest(
            f'If-None-Match must be * or entity tags such as "3", W/"4", not {if_none_match!r}'
        )
    return frozenset(_OPAQUE_TAGS.findall(if_none_match))


def none_match(tags: NoneMatch, revision: int) -> bool:
    """Whether a record at `revision` matches `tags`: a weak comparison (RFC 9110 §13.1.2),
    so `W/"3"` matches the ETag `"3"` as `"3"` does."""
    return tags == ANY_REVISION or f'"{revision}"' in tags


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
