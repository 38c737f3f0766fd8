"""The handlers of the operations: parse the request into a command, call the service once,
serialize the answer. kv.entrypoints.operations says which handler serves which route."""

import time
from typing import Any

import orjson
from starlette.responses import Response

from kv import __version__
from kv.domain.commands import Create, Delete, Get, Put
from kv.domain.model import Record, parse_key, parse_ttl
from kv.entrypoints.problems import BadRequest
from kv.entrypoints.requests import (
    Call,
    none_match,
    none_match_tags,
    only_if_absent,
    utf8_size,
)
from kv.entrypoints.responses import ReadyResponse
from kv.entrypoints.ui import UI_PATH

JSON = "application/json"
_JSON = JSON.encode()


def record_json(record: Record) -> bytes:
    """A record as JSON, its value (already JSON text) spliced in, not encoded again."""
    if record.expires_at is None:
        return b'{"key":%b,"value":%b,"revision":%d}' % (
            orjson.dumps(record.key),
            record.value.encode(),
            record.revision,
        )
    return b'{"key":%b,"value":%b,"revision":%d,"expires_at":"%b"}' % (
        orjson.dumps(record.key),
        record.value.encode(),
        record.revision,
        rfc3339(record.expires_at).encode(),
    )


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as RFC 3339 in UTC: `2026-11-25T20:15:03.120Z`."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _etag(revision: int) -> list[tuple[bytes, bytes]]:
    return [(b"etag", b'"%d"' % revision)]


def record_response(record: Record) -> Response:
    return ReadyResponse(record_json(record), 200, _JSON, _etag(record.revision))


def deleted_response(key: str, revision: int) -> Response:
    body = b'{"key":%b,"revision":%d}' % (orjson.dumps(key), revision)
    return ReadyResponse(body, 200, _JSON, _etag(revision))


def json_response(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type=JSON)


# --- single keys ----------------------------------------------------------------------------


async def create(call: Call) -> Response:
    fields, value = await call.value_body(("key", "value", "ttl"), ("key", "value"))
    key = fields["key"]
    call.key = key if isinstance(key, str) else None
    command = Create(parse_key(key), value, parse_ttl(fields.get("ttl")))
    call.size = utf8_size(value)
    return record_response(await call.service.create(command))


async def get(call: Call) -> Response:
    """Read a key, under If-Match (412, through the service) and If-None-Match (304)."""
    key = call.path_key()
    if_match, if_none_match = call.conditions()
    tags = None if if_none_match is None else none_match_tags(if_none_match)
    record = await call.service.get(Get(key, if_match))
    if tags is not None and none_match(tags, record.revision):
        return Response(status_code=304, headers={"etag": f'"{record.revision}"'})
    call.size = utf8_size(record.value)
    return record_response(record)


async def overwrite(call: Call) -> Response:
    """/kv's PUT: replace a present key, at the If-Match revision when one is given."""
    return await _put(call, upsert=False)


async def upsert(call: Call) -> Response:
    """/v1's PUT: create or overwrite (with If-Match, /kv's compare-and-set)."""
    return await _put(call, upsert=True)


async def _put(call: Call, *, upsert: bool) -> Response:
    """A PUT; with `If-None-Match: *` on either surface, create only (412 if present)."""
    key = call.path_key()
    fields, value = await call.value_body(("value", "key", "ttl"), ("value",))
    if "key" in fields and fields["key"] != key:
        raise BadRequest(f"the body's key {fields['key']!r} differs from the key in the path")
    ttl_ms = parse_ttl(fields.get("ttl"))
    if_match, if_none_match = call.conditions()
    create_only = only_if_absent(if_none_match, if_match)
    command = Put(key, value, if_match, upsert, ttl_ms, if_absent=create_only)
    call.size = utf8_size(value)
    return record_response(await call.service.put(command))


async def delete(call: Call) -> Response:
    key = call.path_key()
    if_match, if_none_match = call.conditions()
    if if_none_match is not None:
        raise BadRequest("If-None-Match does not apply to DELETE (If-Match does)")
    revision = await call.service.delete(Delete(key, if_match))
    return deleted_response(key, revision)


# --- the whole store and the service --------------------------------------------------------


async def reset(call: Call) -> Response:
    """Delete every key (routed only when `KV_ENABLE_RESET` is true)."""
    await call.service.clear()
    return json_response({"status": "reset"})


async def service_info(call: Call) -> Response:
    backend = call.settings.backend
    return json_response(
        {"service": "kv", "version": __version__, "backend": backend, "ui": UI_PATH}
    )


async def health(_: Call) -> Response:
    return json_response({"status": "ok"})


async def ready(call: Call) -> Response:
    await call.service.ping()
    return json_response({"status": "ready", "backend": call.settings.backend})


# What is served the same way whether the app has started or not, on the app's own state.


async def metrics(call: Call) -> Response:
    accept = call.header(b"accept")
    body, content_type = call.scope["app"].state.metrics.render(
        None if accept is None else accept.decode("latin-1")
    )
    return Response(body, headers={"content-type": content_type})


async def openapi(call: Call) -> Response:
    return Response(call.scope["app"].state.openapi, media_type=JSON)


async def docs(call: Call) -> Response:
    return Response(call.scope["app"].state.docs, media_type="text/html")
