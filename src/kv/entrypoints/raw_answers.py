"""The answers kv serve's protocol writes itself, outside the app: problem+json, each with an
`X-Request-ID`, like the app's."""

import time

from loguru import logger
from starlette.types import Receive, Scope, Send

from kv.entrypoints.problems import MEDIA_TYPE, problem_body
from kv.entrypoints.request_ids import RequestIds

RETRY_AFTER_SECONDS = b"1"
_OVERLOAD_LOG_SECONDS = 1.0  # at most one "over the limit" line a second, with a count


def raw_problem(status: int, reason: str, detail: str, request_id: str) -> bytes:
    """A whole HTTP/1.1 problem+json response that closes the connection."""
    body = problem_body(status, reason, detail)
    head = [
        b"HTTP/1.1 %d %s" % (status, reason.encode()),
        b"content-type: " + MEDIA_TYPE.encode(),
        b"content-length: %d" % len(body),
        b"x-request-id: " + request_id.encode(),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Overload:
    """Counts the requests refused for being over the limit, and says so once a second."""

    def __init__(self, limit: int, ids: RequestIds) -> None:
        self.limit = limit
        self.ids = ids
        self.refused = 0
        self.logged_at = 0.0
        self.body = problem_body(
            503,
            "Service Unavailable",
            f"the server is at its limit of {limit} connections or requests; retry shortly",
        )

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= _OVERLOAD_LOG_SECONDS:
            logger.warning(
                "over KV_LIMIT_CONCURRENCY={}: refused {} request(s) with 503",
                self.limit,
                self.refused,
            )
            self.logged_at, self.refused = now, 0
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", b"%d" % len(self.body)),
                    (b"retry-after", RETRY_AFTER_SECONDS),
                    (b"x-request-id", self.ids.of(scope["headers"]).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})
