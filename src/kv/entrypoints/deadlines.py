"""The state kv serve's protocol keeps per connection, and what it does when a deadline
passes or a request is refused.

GuardedHttpToolsProtocol (kv.entrypoints.protocol, whose doc describes each deadline and
limit) is ConnectionDeadlines plus the connection's and the parser's events, which arm and
cancel the timers whose expiry is handled here.
"""

import asyncio
import socket
import struct
from collections import deque
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from kv.entrypoints.coalesce import CoalescingTransport
from kv.entrypoints.raw_answers import Overload, raw_problem
from kv.entrypoints.request_ids import RequestIds

_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class ConnectionDeadlines(HttpToolsProtocol):
    """HttpToolsProtocol with GuardedHttpToolsProtocol's state, deadlines and refusals."""

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
        overload: Overload,
        ids: RequestIds,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_header_bytes = max_header_bytes
        self.overload = overload
        self.ids = ids
        # Open connections and running requests, as uvicorn's own limit_concurrency counts
        # them (`kv serve` leaves that option unset: its answer would be plain text).
        self.open_connections = server_state.connections
        self.running_requests = server_state.tasks
        # Set by connection_made (asyncio's interface rather than uvicorn's attributes).
        self.connection: CoalescingTransport = None  # type: ignore[assignment]
        self.event_loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.reading_head = True  # waiting for (the rest of) a request line and headers
        self.reading_body = False  # the head has arrived, the body has not all arrived
        self.head_bytes = 0
        # Set while the parser reads the head `_decline_upgrade` made up: the real request's.
        self.upgrade_headers: list[tuple[bytes, bytes]] | None = None
        # Why a parser callback stopped the parser: status, title, detail.
        self.refusal: tuple[int, str, str] | None = None
        # Once set, nothing more is read: these bytes are written when every request received
        # is answered, and the connection closed.
        self.last_words: bytes | None = None
        # When the connection last had no request to read or answer (opened, or answered
        # the last one): the next head is due header_timeout after.
        self.idle_since = 0.0
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.send_timer: asyncio.TimerHandle | None = None
        # The send deadline: what is left of body_timeout for the client to keep kv's writes
        # paused, and since when they are (while send_timer is armed).
        self.send_budget = body_timeout
        self.stalled_at = 0.0
        # The requests of this connection not yet answered, oldest (the one being answered)
        # first: uvicorn answers them one at a time, in order.
        self.unanswered: deque[RequestResponseCycle] = deque()

    # --- deadlines --------------------------------------------------------------------------

    def _time_the_head(self) -> None:
        """The next head is due header_timeout after the connection went idle."""
        self.head_timer = self.event_loop.call_at(
            self.idle_since + self.header_timeout, self._head_too_slow
        )

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if not self.reading_head or self.unanswered or self.connection.is_closing():
            return
        if self.event_loop.time() < self.idle_since + self.header_timeout:
            self._time_the_head()  # timed while an earlier request was answered: not yet due
            return
        if self.head_bytes == 0:
            self.connection.close()  # a silent connection: nobody to answer
        else:
            self._time_out("the request line and headers", self.header_timeout)

    def _body_too_slow(self) -> None:
        self.body_timer = None
        if not self.reading_body or self.connection.is_closing():
            return
        self._time_out("the request body", self.body_timeout)

    def _time_out(self, what: str, timeout: float) -> None:
        self._refuse(408, "Request Timeout", f"{what} did not arrive within {timeout:g} s")

    def _not_reading(self) -> None:
        self.send_timer = None
        # Even if the connection is closing: a close() (uvicorn's keep-alive timer, a response
        # with `connection: close`) waits for the very buffer the client does not take, and
        # holds the connection as long. abort() drops kv's buffer, and without lingering
        # the kernel drops its own and resets the connection rather than keep sending.
        sock = self.connection.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.connection.abort()

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """Answer `status` and close the connection.

        A late or malformed head is answered once every request before it is, in order (a
        late head only times out on an idle connection); nothing more is read meanwhile. A
        request whose body is late or malformed is answered now if its handler has not begun
        to answer, and every handler still waiting for a body is told the client is gone, its
        own answer dropped.
        """
        answer = raw_problem(status, reason, detail, self.ids.of(self.headers or []))
        if not self.reading_body:
            if self.unanswered:
                self.last_words = answer
                self.connection.pause_reading()
                return
            self.connection.write(answer)
        elif self.cycle is not None and not self.cycle.response_started:
            self.connection.write(answer)
        self._drop_answers()
        self.connection.close()

    def _drop_answers(self) -> None:
        """Tell every request not yet answered on this connection that the client is gone:
        a handler waiting for its body wakes up, and what it sends is dropped."""
        for cycle in self.unanswered:
            if not cycle.response_complete:
                cycle.keep_alive = False
                cycle.disconnected = True
                cycle.message_event.set()
