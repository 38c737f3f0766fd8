"""uvicorn's httptools protocol with the connection limits uvicorn lacks.

uvicorn closes a keep-alive connection only once it has answered a request on it, and then
only if the connection stays silent: a client that opens a connection and sends nothing, or
trickles its request head or body a byte at a time, or stops reading its response, holds a
connection (and, with the body or the response, a task) for ever. Since uvicorn's
`limit_concurrency` counts open connections, enough such clients make every other request a
503. httptools also reads request heads of any size into memory.

`kv serve` therefore runs this protocol, which adds, per connection:

- a head deadline: the request line and headers must arrive within `header_timeout` of the
  connection opening or the previous response ending (else 408, or a plain close when
  nothing was sent);
- a head size limit: more than `max_header_bytes` before the headers end is 431;
- a body deadline: once its head has arrived, a request's body must arrive within
  `body_timeout` (else 408);
- a send deadline: a client that leaves a response unread for `body_timeout` (the server's
  writes stay paused that long) is disconnected;
- over `limit_concurrency` open connections or running requests, a problem+json 503 with
  `Retry-After`, instead of uvicorn's plain-text one.

Timers are armed only when needed: a request that arrives in one piece costs none beyond
uvicorn's own keep-alive timer. Built against uvicorn's HttpToolsProtocol (pinned in the lock
file); tests/integration/test_limits.py checks each limit against a real `kv serve`.
"""

import asyncio
import functools
import time
from typing import Any

from loguru import logger
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from kv.entrypoints.problems import MEDIA_TYPE, problem_body

RETRY_AFTER_SECONDS = b"1"
_OVERLOAD_LOG_SECONDS = 1.0  # at most one "over the limit" line a second, with a count


def raw_problem(status: int, reason: str, detail: str, *extra: bytes) -> bytes:
    """A whole HTTP/1.1 problem+json response that closes the connection."""
    body = problem_body(status, reason, detail)
    head = [
        b"HTTP/1.1 %d %s" % (status, reason.encode()),
        b"content-type: " + MEDIA_TYPE.encode(),
        b"content-length: %d" % len(body),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Overload:
    """Counts the requests refused for being over the limit, and says so once a second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.refused = 0
        self.logged_at = 0.0
        self.body = problem_body(
            503,
            "Service Unavailable",
            f"the server is at its limit of {limit} connections or requests; retry shortly",
        )

    async def __call__(self, _scope: Scope, _receive: Receive, send: Send) -> None:
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
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus the deadlines and limits of the module doc, one per connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float,
        body_timeout: float,
        max_header_bytes: int,
        overload: _Overload,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_header_bytes = max_header_bytes
        self.overload = overload
        # uvicorn's own check would answer in plain text: this class checks instead.
        self.limit_concurrency = None
        self.reading_head = True  # waiting for (the rest of) a request line and headers
        self.reading_body = False  # the head has arrived, the body has not all arrived
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.send_timer: asyncio.TimerHandle | None = None
        self.running: RequestResponseCycle | None = None  # the request being answered

    # --- connection events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.head_timer, self.body_timer, self.send_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = self.send_timer = None
        # uvicorn tells only the newest request that the client is gone; with pipelining the
        # one being answered is an older one, which would then write to a closed transport.
        self._drop_answers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.reading_head:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.reading_head and self.head_bytes > self.max_header_bytes:
            # A chunk that ended the head is not counted (the flag is off again by then), so
            # this fires only while a head is still incomplete.
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
            )
        elif self.reading_body and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.body_timeout, self._body_too_slow)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.body_timeout, self._not_reading)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self.running = cycle
        super()._start_asgi_task(cycle, app)

    # --- parser callbacks -------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self.reading_head, self.reading_body, self.head_bytes = False, True, 0
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        limit = self.overload.limit
        if len(self.connections) >= limit or len(self.tasks) >= limit:
            # The same test uvicorn's limit_concurrency makes; this answer is problem+json.
            app, self.app = self.app, self.overload
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_head, self.reading_body = True, False
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next head is due within header_timeout (uvicorn's keep-alive timer, armed by
        # super(), closes a connection that stays silent sooner). Not while a pipelined
        # request that super() just started is being answered.
        if (
            self.reading_head
            and self.head_timer is None
            and self.cycle.response_complete
            and not self.transport.is_closing()
        ):
            self.head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    # --- deadlines --------------------------------------------------------------------------

    def _head_too_slow(self) -> None:
        self.head_timer = None
        idle = self.cycle is None or self.cycle.response_complete
        if not (self.reading_head and idle) or self.transport.is_closing():
            return
        if self.head_bytes == 0:
            self.transport.close()  # a silent connection: nobody to answer
        else:
            self._refuse(
                408,
                "Request Timeout",
                f"the request line and headers did not arrive within {self.header_timeout:g} s",
            )

    def _body_too_slow(self) -> None:
        self.body_timer = None
        if not self.reading_body or self.transport.is_closing():
            return
        self._refuse(
            408,
            "Request Timeout",
            f"the request body did not arrive within {self.body_timeout:g} s",
        )

    def _not_reading(self) -> None:
        self.send_timer = None
        if not self.transport.is_closing():
            # abort(), not close(): close() would wait for the very buffer it cannot send.
            self.transport.abort()

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """Answer `status` and close the connection.

        The answer is written only where a response is due: to the request whose body is
        late if nothing was answered yet, to a late or oversized head if no earlier request is
        still being answered (its response would be cut short rather than mixed with this
        one; the client sees a closed connection). A handler waiting for the rest of a body
        is told the client is gone, and its own answer is dropped.
        """
        cycle = self.cycle
        if self.reading_body:
            answer = cycle is not None and not cycle.response_started
        else:
            answer = cycle is None or cycle.response_complete
        if answer:
            self.transport.write(raw_problem(status, reason, detail))
        self._drop_answers()
        self.transport.close()

    def _drop_answers(self) -> None:
        """Tell every request not yet answered on this connection that the client is gone:
        a handler waiting for its body wakes up, and what it sends is dropped."""
        for cycle in (self.running, self.cycle, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False
                cycle.disconnected = True
                cycle.message_event.set()


def protocol_factory(
    *, header_timeout: float, body_timeout: float, max_header_bytes: int, limit_concurrency: int
) -> "functools.partial[GuardedHttpToolsProtocol]":
    """What `kv serve` passes as uvicorn's `http`: the protocol class with these limits.

    A partial of a module-level class, so uvicorn can pickle it into worker processes.
    """
    return functools.partial(
        GuardedHttpToolsProtocol,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_header_bytes=max_header_bytes,
        overload=_Overload(limit_concurrency),
    )
