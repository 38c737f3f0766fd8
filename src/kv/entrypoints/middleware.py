"""Pure-ASGI middleware (BaseHTTPMiddleware costs throughput): request context and auth."""

import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kv.entrypoints.problems import problem_response
from kv.entrypoints.request_ids import RequestIds
from kv.metrics import UNMATCHED_ROUTE, Metrics

REQUEST_ID = "kv.request_id"


class RequestContextMiddleware:
    """Gives every request an id (`X-Request-ID`, taken or generated, and returned) and
    ignores one trailing `/` of its path (the one place that does).

    With `metrics`, also counts and times every request by the template of the route that
    answered it; here rather than in a middleware of its own, which would cost a layer of
    calls per request.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None) -> None:
        self.app = app
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
            raw = scope.get("raw_path")
            if raw is not None and raw.endswith(b"/"):
                scope["raw_path"] = raw[:-1]
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
            if self.metrics is not None:
                route = scope.get("route")  # set by Starlette's router, 401s included
                self.metrics.observe_request(
                    UNMATCHED_ROUTE if route is None else route.path,
                    scope["method"],
                    status,
                    time.perf_counter() - started,
                )


class BearerAuth:
    """Requires `Authorization: Bearer <token>`; put on the routes of data operations only
    (routes derived from the operation table), and only when a token is set."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        # compare_digest takes time independent of where the bytes differ.
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        refusal = problem_response(
            401,
            None,
            "this path needs an Authorization: Bearer <token> header",
            headers={"www-authenticate": 'Bearer realm="kv"'},
        )
        await refusal(scope, receive, send)
