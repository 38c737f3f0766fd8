"""The Starlette application, built from the operation table (kv.entrypoints.operations).

`app = create_app()` reads the environment but does no I/O: the backend connects in the
lifespan, and only the backend chosen by `KV_BACKEND` is started.

A request's path through the code: `RequestContextMiddleware` (request id, trailing `/`,
metrics) → Starlette's router → the route of the request's path, with `BearerAuth` when it
needs the token → `OperationsOfPath`, which picks the operation of the request's method (or
answers 405) and runs its handler: the handler parses the request into a command, calls the
service once and serializes the answer; a domain error becomes problem+json here, and the
operation is logged.
"""

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from loguru import logger
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from kv import __version__
from kv.container import Container, Settings, build_container, start_service, stop_service
from kv.domain.errors import KVError, StorageUnavailable, TransactionFailed
from kv.domain.service import KVService
from kv.entrypoints.docs import DOCS_ASSETS_PATH, docs_page
from kv.entrypoints.middleware import REQUEST_ID, BearerAuth, RequestContextMiddleware
from kv.entrypoints.openapi import document
from kv.entrypoints.operations import Operation, operations
from kv.entrypoints.problems import HTTPProblem, MethodNotAllowed, describe, problem_response
from kv.entrypoints.requests import Call, Stream
from kv.entrypoints.ui import UiFiles
from kv.logs import Extra, OperationLog, configure_logging, remove_handlers
from kv.metrics import Metrics

RETRY_AFTER_SECONDS = "1"


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


class OperationsOfPath:
    """The ASGI app of one route: runs the operation of the request's method, maps domain
    and request errors to problem+json, and logs the operation.

    405 with an `Allow` header in the table's order (HEAD is served as GET)."""

    def __init__(self, path: str, ops: list[Operation], log: OperationLog) -> None:
        self.by_method: dict[str, Operation] = {}
        for op in ops:
            self.by_method[op.method] = op
            if op.method == "GET" and op.safe:
                self.by_method["HEAD"] = op
        self.allowed = tuple(self.by_method)
        literal, key, _ = path.partition("{")
        self.prefix = literal.encode()
        self.exact = not key  # no {key}: the whole path is literal
        if self.exact:
            self.prefix = (literal.rstrip("/") or "/").encode()
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._literally_matched(scope.get("raw_path")):
            await _no_route(scope)(scope, receive, send)
            return
        started = time.perf_counter()
        op = self.by_method.get(scope["method"])
        call = Call(scope, receive, self.prefix)
        status = 500
        try:
            try:
                if op is None:
                    raise MethodNotAllowed(scope["method"], self.allowed)
                response = await op.handler(call)
                if isinstance(response, Stream):  # a watch: its opening is a line of its own
                    self._log(op, call, 200, started, {"phase": "open"})
                    started = time.perf_counter()
            except KVError as error:
                response = _domain_problem(call, error)
            except HTTPProblem as problem:
                response = problem_response(
                    problem.status, problem.title, problem.detail, headers=problem.headers
                )
            except ClientDisconnect:
                # Nobody reads this answer; 400 keeps the log honest about an incomplete body.
                response = problem_response(400, "Bad Request", "the client left mid-body")
            status = response.status_code
            await response(scope, receive, send)
        finally:
            if op is not None and op.data:
                self._log(op, call, status, started, call.extra)

    def _log(self, op: Operation, call: Call, status: int, started: float, extra: Extra) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        request_id = call.scope.get(REQUEST_ID, "-")
        self.log.record(
            op.name, call.key, status, elapsed_ms, request_id, call.size,
            outcome=call.outcome, extra=extra,
        )  # fmt: skip

    def _literally_matched(self, raw: bytes | None) -> bool:
        """Whether the path as sent (before percent-decoding, which the router matched)
        has this route's literal part: `/kv%2Fa` or `/%6Bv/a` decode to `/kv/a` but are
        not `/kv/{key}` (and would otherwise name the key `2Fa` or `v/a`)."""
        if raw is None:  # a server that gives no raw path: the decoded one is all there is
            return True
        return raw == self.prefix if self.exact else raw.startswith(self.prefix)


def _domain_problem(call: Call, error: KVError) -> Response:
    settings = call.settings
    status, title, detail, fields = describe(error, backend_timeout=settings.backend_timeout)
    headers = None
    if status == 503:
        headers = {"retry-after": RETRY_AFTER_SECONDS}
    if isinstance(error, StorageUnavailable):
        logger.bind(request_id=call.scope.get(REQUEST_ID)).opt(exception=error).error(
            "backend unavailable: {}", detail
        )
    if isinstance(error, TransactionFailed):
        call.outcome = _TXN_OUTCOMES.get(error.reason)
    key = error.key if error.key is not None else call.key
    return problem_response(status, title, detail, key=key, fields=fields, headers=headers)


# A failed transaction's outcome in the operation log, by its reason.
_TXN_OUTCOMES = {
    "exists": "exists",
    "not_found": "not_found",
    "revision_mismatch": "precondition_failed",
}


def _no_route(scope: Scope) -> Response:
    return problem_response(404, "Not Found", f"no route for {scope['path']}")


def routes(table: list[Operation], settings: Settings, log: OperationLog) -> list[BaseRoute]:
    """One route per path of the table, in the table's order, with auth where it is needed."""
    paths: dict[str, list[Operation]] = {}
    for op in table:
        paths.setdefault(op.path, []).append(op)
    built: list[BaseRoute] = []
    for path, ops in paths.items():
        middleware = None
        if settings.auth_token and any(op.data for op in ops):
            middleware = [Middleware(BearerAuth, token=settings.auth_token)]
        route_path = (path.rstrip("/") or "/").replace("{key}", "{key:anypath}")
        built.append(Route(route_path, OperationsOfPath(path, ops, log), middleware=middleware))
    built.append(Mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path))))
    return built


class DirectRoute:
    """Hands the requests of the busiest routes, `/kv/{key}` and `/kv`, straight to them: past
    Starlette's exception middleware (which builds a Request per request), its router (a
    regular expression per route tried) and Route. Every other request goes through Starlette.

    Safe because those routes take every method (their OperationsOfPath answers 405), the
    key route every path under `/kv/` (checking the raw path itself), neither raises an
    HTTPException, and they read nothing the router would have added but `scope["route"]`,
    set here for the metrics. Measured with bench/app_cost.py (CPU per request in the app,
    memory backend, a loaded machine): kv/floor went from ~1.9 to ~1.1-1.5 on GET and from
    ~2.0 to ~1.3-1.6 on PUT.
    """

    def __init__(self, app: ASGIApp, *, key: Route | None, collection: Route | None) -> None:
        self.app = app
        self.key = key
        self.collection = collection

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            route = (
                self.key if path.startswith("/kv/") else self.collection if path == "/kv" else None
            )
            if route is not None:
                scope["route"] = route
                await route.app(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _route_of(built: list[BaseRoute], path: str) -> Route | None:
    return next((r for r in built if isinstance(r, Route) and r.path == path), None)


# --- errors outside the operations ----------------------------------------------------------


async def starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _no_route(request.scope)
    return problem_response(exc.status_code, None, exc.detail, headers=dict(exc.headers or {}))


async def server_error(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get(REQUEST_ID)
    logger.bind(request_id=request_id).opt(exception=exc).error("unhandled error")
    # Starlette sends this answer outside the middleware that adds X-Request-ID; add it here.
    headers = {"x-request-id": request_id} if request_id else None
    return problem_response(
        500, None, "the server failed; the error is in its log", headers=headers
    )


# --- the application -----------------------------------------------------------------------


def freeze_start_up_heap() -> None:
    """What is alive once kv has started (modules, the app, the container, its connections)
    lives as long as the process. Moved out of the cyclic collector's generations, it is no
    longer walked by every full collection, which pauses the event loop and every request in
    flight (#19). Collected first, so that no start-up garbage is kept for good. Not for a
    process that builds many apps, as the tests do: a frozen app is never collected."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    *,
    container: Container | None = None,
    table: list[Operation] | None = None,
    freeze_heap: bool = False,
) -> Starlette:
    """The application for `settings` (by default read from the environment). No I/O here.

    `container` lets tests override providers (a failing repository, say); `table` lets them
    serve another operation table. `freeze_heap`, for a process that serves this one app until
    it exits: see `freeze_start_up_heap`.
    """
    if settings is None:
        settings = Settings.from_env(os.environ)
    wiring = container or build_container(settings)
    served = operations(settings) if table is None else table
    log = OperationLog(
        backend=settings.backend,
        fmt=settings.log_format,
        enabled=settings.log_level in ("TRACE", "DEBUG", "INFO"),
    )
    metrics: Metrics | None = wiring.metrics() if settings.metrics else None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[State]:
        handlers = configure_logging(
            level=settings.log_level, fmt=settings.log_format, file=settings.log_file
        )
        background = [asyncio.create_task(log.run())]
        if metrics is not None:
            background.append(asyncio.create_task(metrics.run()))
        try:
            try:
                service = await start_service(wiring)
            except Exception as exc:
                # Said here, while the log handlers exist: uvicorn reports a failed start-up
                # only after this lifespan has removed them.
                logger.critical("kv cannot start on the {} backend: {}", settings.backend, exc)
                raise
            if freeze_heap:
                freeze_start_up_heap()
            logger.info("kv {} ready on the {} backend", __version__, settings.backend)
            yield {"service": service, "settings": settings}
        finally:
            for task in background:
                task.cancel()
            log.flush()
            await stop_service(wiring)
            if metrics is not None:
                metrics.publish()
            logger.info("kv stopped")
            remove_handlers(handlers)

    built = routes(served, settings, log)
    app = Starlette(
        routes=built,
        middleware=[
            Middleware(RequestContextMiddleware, metrics=metrics),
            Middleware(
                DirectRoute,
                key=_route_of(built, "/kv/{key:anypath}"),
                collection=_route_of(built, "/kv"),
            ),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: starlette_error, Exception: server_error},
    )
    # kv ignores a trailing "/" itself (RequestContextMiddleware): Starlette's redirects to
    # add or remove one would only loop against it.
    app.router.redirect_slashes = False
    app.state.openapi = document(settings, served)
    app.state.docs = docs_page()
    app.state.ui = UiFiles()
    app.state.metrics = metrics
    return app


# What `uvicorn kv.entrypoints.http:app` and each worker of `kv serve --workers N` serve.
app = create_app(freeze_heap=True)
