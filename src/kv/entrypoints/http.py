"""The Starlette application: routes, request parsing, responses and the error map.

`app = create_app()` reads the environment but does no I/O: the backend connects in the
lifespan, and only the backend chosen by `KV_BACKEND` is started.
"""

import asyncio
import http
import json
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sized
from contextlib import asynccontextmanager
from typing import Any, TypedDict
from urllib.parse import unquote_to_bytes

import orjson
from loguru import logger
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from kv import __version__
from kv.container import Container, Settings, build_container, start_service, stop_service
from kv.domain.commands import ANY_REVISION, Condition, Create, Delete, Get, Put
from kv.domain.errors import InvalidKey, KVError, StorageUnavailable
from kv.domain.model import MAX_VALUE_DEPTH, NO_REVISION, Record, parse_key, validate_value
from kv.domain.service import KVService
from kv.entrypoints.middleware import (
    KEY,
    OPERATION,
    REQUEST_ID,
    SIZE,
    BearerAuthMiddleware,
    RequestContextMiddleware,
)
from kv.entrypoints.openapi import docs_routes
from kv.entrypoints.problems import (
    MEDIA_TYPE,
    BadRequest,
    HTTPProblem,
    MethodNotAllowed,
    PayloadTooLarge,
    describe,
    problem_body,
)
from kv.logs import OperationLog, configure_logging, remove_handlers
from kv.metrics import Metrics

ITEM_METHODS = ("GET", "HEAD", "PUT", "DELETE")
COLLECTION_METHODS = ("POST",)
RESET_METHODS = ("GET", "POST")
ITEM_OPERATIONS = {"GET": "get", "HEAD": "get", "PUT": "overwrite", "DELETE": "delete"}
V1_ITEM_OPERATIONS = {**ITEM_OPERATIONS, "PUT": "upsert"}
RETRY_AFTER_SECONDS = "1"

# orjson reads integers beyond 64 bits as floats; a run of 20+ digits sends the body to the
# standard library, which keeps them exact.
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


class State(TypedDict):
    service: KVService
    settings: Settings


class _AnyPathConvertor(Convertor[str]):
    """Like Starlette's `path`, but also across newlines (`.` stops at `%0A`), so a key with
    a control character reaches the handler and gets its 400 rather than a 404."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette's convertor table is a registry filled at import; this adds one entry, once.
register_url_convertor("anypath", _AnyPathConvertor())


# --- requests -------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes.

    Counted while it streams in, so a huge body is never held in memory (the check lives here
    rather than in a middleware because only these handlers read bodies, and the operation is
    already named when it fails, so the 413 is logged with it).
    """
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(limit)
            break
    receive = request.receive
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            body = body + chunk if body else chunk
            if len(body) > limit:
                raise PayloadTooLarge(limit)
        if not message.get("more_body", False):
            return body


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


def json_object(
    request_body: bytes, allowed: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, Any]:
    data = parse_json(request_body)
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
    return data


def path_key(scope: Scope, prefix: int) -> str:
    """The key in the URL after `prefix` characters, percent-decoded as UTF-8.

    Read from `raw_path` so invalid UTF-8 is a 400 rather than a replacement character; one
    trailing `/` is ignored like everywhere else.
    """
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        key: str = scope["path"][prefix:]
    else:
        raw = raw[prefix:]
        if raw.endswith(b"/"):
            raw = raw[:-1]
        if b"%" not in raw:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidKey(None, _NOT_UTF8) from None
        try:
            key = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidKey(None, _NOT_UTF8) from None
    return key


_NOT_UTF8 = "the key in the URL is not valid UTF-8"


def if_match(scope: Scope) -> Condition:
    """The condition of an `If-Match` header: a revision, `*`, or None without one."""
    # A scan of the raw headers: building request.headers costs more than the rest here.
    for name, value in scope["headers"]:
        if name == b"if-match":
            header = value.decode("latin-1")
            break
    else:
        return None
    tag = header.strip()
    if tag == "*":
        return ANY_REVISION
    digits = tag[1:-1]
    # isascii: str.isdigit() is also true for "²", which int() refuses (a 500 before this).
    if len(tag) > 2 and tag[0] == '"' and tag[-1] == '"' and digits.isascii() and digits.isdigit():
        # No revision has 20 digits (they are 64-bit), and int() refuses more than 4300.
        return int(digits) if len(digits.lstrip("0")) < 20 else NO_REVISION
    if tag.startswith('W/"'):
        return NO_REVISION  # a weak tag never matches under the strong comparison If-Match uses
    raise BadRequest(f'If-Match must be one entity tag such as "3" (or *), not {header!r}')


# --- responses ------------------------------------------------------------------------------


def record_response(record: Record, *, with_value: bool = True) -> Response:
    key = orjson.dumps(record.key)
    if with_value:
        body = b'{"key":%b,"value":%b,"revision":%d}' % (
            key,
            record.value.encode(),
            record.revision,
        )
    else:
        body = b'{"key":%b,"revision":%d}' % (key, record.revision)
    return RecordResponse(body, record.revision)


class RecordResponse(Response):
    """A 200 JSON record with its ETag, headers built directly (the hot path's response)."""

    media_type = "application/json"

    def __init__(self, body: bytes, revision: int) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
            (b"etag", b'"%d"' % revision),
        ]


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        problem_body(status, title, detail, key=key),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


# --- handlers -------------------------------------------------------------------------------


def item_endpoint(
    prefix: str, operations: Mapping[str, str], *, upsert: bool
) -> Callable[[Request], Awaitable[Response]]:
    """The handler of `{prefix}{key}`: GET, HEAD, DELETE and PUT (an upsert when `upsert`).

    `operations` names what each method does in the operation log. /kv and /v1 differ only
    in their PUT, so both are built here rather than written twice.
    """
    start = len(prefix)

    async def item(request: Request) -> Response:
        scope = request.scope
        method = scope["method"]
        operation = operations.get(method)
        if operation is None:
            raise MethodNotAllowed(method, ITEM_METHODS)
        scope[OPERATION] = operation
        raw_key = path_key(scope, start)
        scope[KEY] = raw_key
        key = parse_key(raw_key)
        state = scope["state"]
        service: KVService = state["service"]
        if operation == "get":
            record = await service.get(Get(key))
            scope[SIZE] = utf8_size(record.value)
            return record_response(record)
        if operation == "delete":
            deleted = await service.delete(Delete(key, if_match(scope)))
            return record_response(Record(key, "", deleted), with_value=False)
        body = await read_body(request, state["settings"].max_body_bytes)
        data = json_object(body, ("value", "key"), ("value",))
        if "key" in data and data["key"] != key:
            raise BadRequest(f"the body's key {data['key']!r} differs from the key in the path")
        value = encode_value(data["value"], body)
        scope[SIZE] = utf8_size(value)
        return record_response(await service.put(Put(key, value, if_match(scope), upsert)))

    return item


kv_item = item_endpoint("/kv/", ITEM_OPERATIONS, upsert=False)
v1_item = item_endpoint("/v1/", V1_ITEM_OPERATIONS, upsert=True)


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


async def kv_collection(request: Request) -> Response:
    scope = request.scope
    if scope["method"] != "POST":
        raise MethodNotAllowed(scope["method"], COLLECTION_METHODS)
    scope[OPERATION] = "create"
    state = scope["state"]
    body = await read_body(request, state["settings"].max_body_bytes)
    data = json_object(body, ("key", "value"), ("key", "value"))
    raw_key = data["key"]
    scope[KEY] = raw_key if isinstance(raw_key, str) else None
    key = parse_key(raw_key)
    value = encode_value(data["value"], body)
    scope[SIZE] = utf8_size(value)
    record = await state["service"].create(Create(key, value))
    return record_response(record)


async def reset(request: Request) -> Response:
    """Delete every key (routed only when `KV_ENABLE_RESET` is true)."""
    scope = request.scope
    if scope["method"] not in RESET_METHODS:
        raise MethodNotAllowed(scope["method"], RESET_METHODS)
    scope[OPERATION] = "reset"
    await scope["state"]["service"].clear()
    return json_response({"status": "reset"})


async def root(request: Request) -> Response:
    settings: Settings = request.scope["state"]["settings"]
    return json_response({"service": "kv", "version": __version__, "backend": settings.backend})


async def health(_: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    state = request.scope["state"]
    await state["service"].ping()
    return json_response({"status": "ready", "backend": state["settings"].backend})


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    return endpoint


def instrument(service: KVService, metrics: Metrics, backend: str) -> KVService:
    """The service on a repository whose calls are timed, for a backend over the network.

    The memory backend's calls are dict operations in this process (~0.2 µs): timing them
    costs more than they take (~1.4 µs a request, measured) and says nothing, so memory
    publishes its number of keys instead.
    """
    repository = service.repository
    if backend == "memory":
        if isinstance(repository, Sized):
            metrics.count_keys(repository)
        return service
    return KVService(metrics.instrument(repository))


class AnyMethod:
    """An endpoint that receives every method and answers 405 itself, as problem+json.

    (Starlette gives a plain function route only GET unless its methods are listed.)
    """

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


# --- errors ---------------------------------------------------------------------------------


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KVError)
    settings: Settings = request.scope["state"]["settings"]
    status, title, detail = describe(exc, backend_timeout=settings.backend_timeout)
    headers = None
    if isinstance(exc, StorageUnavailable):
        logger.bind(request_id=request.scope.get(REQUEST_ID)).opt(exception=exc).error(
            "backend unavailable: {}", detail
        )
        headers = {"retry-after": RETRY_AFTER_SECONDS}
    return problem(status, title, detail, key=exc.key, headers=headers)


async def http_problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return problem(exc.status, exc.title, exc.detail, headers=exc.headers)


async def starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    title = http.HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, title, detail, headers=dict(exc.headers or {}))


async def client_disconnect(_: Request, __: Exception) -> Response:
    # Nobody reads this answer; 400 keeps the operation log honest about an incomplete body.
    return problem(400, "Bad Request", "the client closed the connection before the body ended")


async def server_error(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get(REQUEST_ID)
    logger.bind(request_id=request_id).opt(exception=exc).error("unhandled error")
    # Starlette sends this answer outside the middleware that adds X-Request-ID; add it here.
    headers = {"x-request-id": request_id} if request_id else None
    return problem(
        500, "Internal Server Error", "the server failed; the error is in its log", headers=headers
    )


# --- the application -----------------------------------------------------------------------


def create_app(
    settings: Settings | None = None, *, container: Container | None = None
) -> Starlette:
    """The application for `settings` (by default read from the environment). No I/O here.

    `container` lets tests override providers (a failing repository, say); by default one is
    built from `settings` when the app starts.
    """
    if settings is None:
        settings = Settings.from_env(os.environ)
    operations = OperationLog(
        backend=settings.backend,
        fmt=settings.log_format,
        enabled=settings.log_level in ("TRACE", "DEBUG", "INFO"),
    )
    metrics = Metrics(backend=settings.backend) if settings.metrics else None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[State]:
        handlers = configure_logging(
            level=settings.log_level, fmt=settings.log_format, file=settings.log_file
        )
        wiring = container or build_container(settings)
        flusher = asyncio.create_task(operations.run())
        publisher = asyncio.create_task(metrics.run()) if metrics is not None else None
        try:
            try:
                service = await start_service(wiring)
            except Exception as exc:
                # Said here, while the log handlers exist: uvicorn reports a failed start-up
                # only after this lifespan has removed them.
                logger.critical("kv cannot start on the {} backend: {}", settings.backend, exc)
                raise
            if metrics is not None:
                service = instrument(service, metrics, settings.backend)
            logger.info("kv {} ready on the {} backend", __version__, settings.backend)
            yield {"service": service, "settings": settings}
        finally:
            flusher.cancel()
            operations.flush()
            await stop_service(wiring)
            if metrics is not None and publisher is not None:
                publisher.cancel()
                metrics.publish()
                metrics.stop_counting_keys()
            logger.info("kv stopped")
            remove_handlers(handlers)

    middleware = [Middleware(RequestContextMiddleware, operations=operations, metrics=metrics)]
    if settings.auth_token:
        middleware.append(Middleware(BearerAuthMiddleware, token=settings.auth_token))

    routes: list[BaseRoute] = [
        # Starlette tries routes in order: the busiest first.
        Route("/kv/{key:anypath}", AnyMethod(kv_item)),
        Route("/kv", AnyMethod(kv_collection)),
        # The compatibility surface: the same records, PUT upserts. POST is /kv's create.
        Route("/v1", AnyMethod(kv_collection)),
        Route("/v1/{key:anypath}", AnyMethod(v1_item)),
        Route("/", root, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
    if settings.enable_reset:
        routes.append(Route("/_reset", AnyMethod(reset)))
    if metrics is not None:
        routes.append(Route("/metrics", metrics_endpoint(metrics), methods=["GET"]))
    # Keep this after every route: the OpenAPI document describes the routes listed above it.
    routes += docs_routes(settings, [getattr(route, "path", "") for route in routes])
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            KVError: domain_error,
            HTTPProblem: http_problem,
            HTTPException: starlette_error,
            ClientDisconnect: client_disconnect,
            Exception: server_error,
        },
    )


app = create_app()
