"""Pure-ASGI middleware (BaseHTTPMiddleware costs throughput): request context and auth."""

import hmac
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kv.entrypoints.problems import problem_body
from kv.entrypoints.request_ids import RequestIds
from kv.logs import OperationLog
from kv.metrics import UNMATCHED_ROUTE, Metrics

# Handlers name the operation they perform in the scope; the middleware logs it once done.
OPERATION = "kv.operation"
KEY = "kv.key"
SIZE = "kv.bytes"
REQUEST_ID = "kv.request_id"


class RequestContextMiddleware:
    """Gives every request an id (`X-Request-ID`, taken or generated, and returned), strips a
    trailing `/` from the path, and records the operation the handler performed.

    With `metrics`, also counts and times every request by route template; here rather than
    in a middleware of its own, which would cost a layer of calls per request.
    """

    def __init__(
        self, app: ASGIApp, *, operations: OperationLog, metrics: Metrics | None = None
    ) -> None:
        self.app = app
        self.operations = operations
        self.ids = RequestIds()
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        if len(path) > 1 and path[-1] == "/":
            scope["path"] = path[:-1]
        request_id = self.ids.of(scope["headers"])
        scope[REQUEST_ID] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            operation = scope.get(OPERATION)
            if operation is not None:
                self.operations.record(
                    operation,
                    scope.get(KEY),
                    status,
                    elapsed * 1000,
                    request_id,
                    scope.get(SIZE),
                )
            if self.metrics is not None:
                route = scope.get("route")  # set by Starlette's router
                self.metrics.observe_request(
                    route.path if route is not None else self._route_of(scope),
                    scope["method"],
                    status,
                    elapsed,
                )

    @staticmethod
    def _route_of(scope: Scope) -> str:
        """The template of the route meant by a request answered before routing (a 401)."""
        routes: Sequence[BaseRoute] = scope["app"].routes  # Starlette puts itself there
        for route in routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return getattr(route, "path", UNMATCHED_ROUTE)
        return UNMATCHED_ROUTE


class BearerAuthMiddleware:
    """Requires `Authorization: Bearer <token>` on the data paths.

    Added to the app only when a token is set, so it costs nothing otherwise."""

    PROTECTED = ("/kv", "/v1", "/_reset")

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_protected(scope["path"], self.PROTECTED):
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            # compare_digest takes time independent of where the bytes differ.
            if not hmac.compare_digest(given, self.expected):
                body = problem_body(
                    401, "Unauthorized", "this path needs an Authorization: Bearer <token> header"
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer realm="kv"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _is_protected(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)
