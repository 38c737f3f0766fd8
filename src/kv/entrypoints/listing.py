"""`GET /kv?prefix=&limit=&cursor=&values=`: a page of the keys under a prefix, in order."""

import base64
import binascii
import zlib

import orjson
from starlette.responses import Response

from kv.domain.commands import ListKeys
from kv.domain.model import DEFAULT_PAGE, Entry, check_page_size
from kv.entrypoints.handlers import JSON, rfc3339
from kv.entrypoints.problems import BadRequest
from kv.entrypoints.requests import Call

PARAMETERS = ("prefix", "limit", "cursor", "values")
_MAX_LIMIT_DIGITS = 6


async def list_keys(call: Call) -> Response:
    query = call.query(PARAMETERS)
    prefix = query.get("prefix", "")
    call.key = prefix
    limit = check_page_size(_limit(query.get("limit")))
    values = _flag("values", query.get("values", "false"))
    after = None if "cursor" not in query else decode_cursor(query["cursor"], prefix)
    page = await call.service.list(ListKeys(prefix, limit, after, values))
    following = encode_cursor(prefix, page.entries[-1].key) if page.more else None
    call.extra = {"items": len(page.entries)}
    body = b'{"items":[%b],"next":%b}' % (
        b",".join(map(entry_json, page.entries)),
        orjson.dumps(following),
    )
    return Response(body, media_type=JSON)


def entry_json(entry: Entry) -> bytes:
    """An entry as JSON: key, revision, expires_at when it has one, value when listed."""
    parts = [b'{"key":%b,"revision":%d' % (orjson.dumps(entry.key), entry.revision)]
    if entry.expires_at is not None:
        parts.append(b',"expires_at":"%b"' % rfc3339(entry.expires_at).encode())
    if entry.value is not None:
        parts.append(b',"value":%b' % entry.value.encode())
    parts.append(b"}")
    return b"".join(parts)


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_LIMIT_DIGITS):
        raise BadRequest(f"limit must be a whole number from 1 to 1000, not {text[:40]!r}")
    return int(text)


def _flag(name: str, text: str) -> bool:
    if text not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, not {text[:40]!r}")
    return text == "true"


# --- cursors ---------------------------------------------------------------------------------
# A cursor is the prefix and the last key of a page, with a CRC-32 so that a cursor that was
# cut, mangled or made up is refused (400) rather than read as some other position.


def encode_cursor(prefix: str, after: str) -> str:
    payload = orjson.dumps([prefix, after])
    checked = zlib.crc32(payload).to_bytes(4, "big") + payload
    return base64.urlsafe_b64encode(checked).rstrip(b"=").decode()


def decode_cursor(cursor: str, prefix: str) -> str:
    """The key after which the page continues; 400 unless kv issued `cursor` for `prefix`."""
    try:
        checked = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        crc, payload = checked[:4], checked[4:]
        if zlib.crc32(payload).to_bytes(4, "big") != crc:
            raise ValueError("checksum")
        issued_for, after = orjson.loads(payload)
        if not (isinstance(issued_for, str) and isinstance(after, str)):
            raise ValueError("shape")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("cursor is not one that kv issued (pass `next` as it was)") from None
    if issued_for != prefix:
        raise BadRequest(
            "cursor was issued for another prefix; pass the same prefix with its cursor"
        )
    return after
