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
- a head size limit: a request line and headers over `max_header_bytes` get 431, counted as
  received while the head is incomplete and as parsed once it is, however it arrives;
- a body deadline: once its head has arrived, a request's body must arrive within
  `body_timeout` (else 408);
- a send deadline: a client that keeps kv's writes paused (does not take what is sent) for
  `body_timeout` in all, over every stall until it has taken everything written, is
  disconnected with a reset, even once its response is complete and the connection closing;
- over `limit_concurrency` open connections or running requests, a problem+json 503 with
  `Retry-After`, instead of uvicorn's plain-text one;
- a request httptools cannot parse gets a problem+json 400 (uvicorn's is plain text), and
  one with a method it does not know a 501 (RFC 9110 15.6.2);
- an HTTP/1.1 request without a Host header, or any request with two, gets 400 (RFC 9112
  3.2), as does a request target uvicorn cannot read;
- a client that half-closes its connection gets the answers to the requests it sent before;
- a request asking to switch protocols (`Upgrade: h2c`, `websocket`) is served as the
  HTTP/1.1 request it also is, body included (RFC 9110 7.8), and what follows it is read
  as the next request: kv upgrades to nothing (`kv serve` runs uvicorn with `ws="none"`).

Every answer this module writes itself is problem+json with an `X-Request-ID`: the client's,
when its head was parsed that far and the id is usable, else a generated one. A head refused
after requests pipelined before it is answered after them, in order; nothing sent after it
is read.

Timers are armed only when needed: a request that arrives in one piece costs none beyond
uvicorn's own keep-alive timer. tests/integration/test_limits.py checks each limit against a
real `kv serve`.

uvicorn has no public API for any of this: the class extends uvicorn's HttpToolsProtocol
through the members kv.entrypoints.uvicorn_hooks lists, read from the uvicorn version
pyproject.toml pins, and checked when `kv serve` builds the factory, so another uvicorn stops
start-up with a message rather than misbehaving under load. Where asyncio gives the same
thing publicly (the transport, the loop), the class uses that.
"""

import asyncio
import functools
import socket
import struct
from collections import deque
from typing import Any, NoReturn

import httptools
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from kv.entrypoints.raw_answers import Overload, raw_problem
from kv.entrypoints.request_ids import RequestIds
from kv.entrypoints.uvicorn_hooks import UVICORN_CLASSES, UnsupportedUvicorn, check_uvicorn

__all__ = ["UnsupportedUvicorn", "protocol_factory"]

# An asyncio.Event a streaming response puts in its scope: set when the server shuts down.
STOP_STREAM = "kv.stop_stream"

_BODY_FRAMING = (b"content-length", b"transfer-encoding")
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
# A head's bytes besides its target, names and values: the rest of the request line (with
# kv's longest method) and the CRLF that ends the head.
_REQUEST_LINE_BYTES = len(b"DELETE  HTTP/1.1\r\n\r\n")


class _Refused(Exception):
    """Raised by a parser callback to stop httptools at a head the protocol refuses."""


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
        self.connection: asyncio.Transport = None  # type: ignore[assignment]
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

    # --- connection events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.connection = transport
        self.event_loop = asyncio.get_running_loop()
        self.idle_since = self.event_loop.time()
        self._time_the_head()

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
        # uvicorn's data_received, but answering parse errors in problem+json, and serving
        # requests that ask for an upgrade.
        if self.last_words is not None:
            return  # the connection ends once the requests before are answered
        self._unset_keepalive_if_required()
        if self.reading_head:
            self.head_bytes += len(data)
        if not self._parse(data):
            return
        if self.connection.is_closing():
            return
        if self.reading_head and self.head_bytes and self.head_timer is None:
            # A head begun and not finished in this read (timed only now, so a request that
            # arrives in one piece costs no timer).
            self._time_the_head()
        if self.reading_head and self.head_bytes > self.max_header_bytes:
            # A head still incomplete (one that ended in this chunk was measured as parsed by
            # on_headers_complete), which would otherwise grow in memory.
            self._refuse(*self._head_too_large())
        elif self.reading_body and self.body_timer is None:
            self.body_timer = self.event_loop.call_later(self.body_timeout, self._body_too_slow)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        # The client sends nothing more (`shutdown(SHUT_WR)`) but may still read: answer the
        # requests it has sent, then close (returning True keeps the transport open for
        # writing; uvicorn's returns None, and the transport closed under a handler whose
        # write had been applied). A head or body cut short by the end will never be
        # finished: close at once, as before.
        if self.unanswered and not self.reading_body:
            if self.last_words is None:
                self.last_words = b""  # nothing to add to the answers
            return True
        return None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.send_timer is None:
            self.stalled_at = self.event_loop.time()
            self.send_timer = self.event_loop.call_at(
                self.stalled_at + self.send_budget, self._not_reading
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None
            if self.connection.get_write_buffer_size():
                # It took some, not all: a slow reader does that at every stall, so the
                # deadline is not restarted but goes on at the next one.
                self.send_budget -= self.event_loop.time() - self.stalled_at
            else:
                self.send_budget = self.body_timeout  # it has caught up

    # --- parsing ----------------------------------------------------------------------------

    def _parse(self, data: bytes) -> bool:
        """Feed `data` to the parser; False when the connection is refused for it."""
        while True:
            try:
                self.parser.feed_data(data)
                return True
            except httptools.HttpParserUpgrade as upgrade:
                data = self._decline_upgrade() + data[upgrade.args[0] :]
            except httptools.HttpParserInvalidMethodError:
                self._refuse(501, "Not Implemented", "the request method is not one kv knows")
                return False
            except httptools.HttpParserCallbackError:
                # on_headers_complete refused the head, or uvicorn's could not read its target
                self._refuse(
                    *(self.refusal or (400, "Bad Request", "the request target cannot be read"))
                )
                return False
            except httptools.HttpParserError as error:
                self._refuse(400, "Bad Request", f"the request is not valid HTTP/1.1: {error}")
                return False

    def _stop_parsing(self, refusal: tuple[int, str, str]) -> NoReturn:
        """From a parser callback: stop httptools at this head, and have _parse refuse it."""
        self.refusal = refusal
        raise _Refused

    def _head_too_large(self) -> tuple[int, str, str]:
        return (
            431,
            "Request Header Fields Too Large",
            f"the request line and headers exceed {self.max_header_bytes} bytes",
        )

    def _decline_upgrade(self) -> bytes:
        """Serve the request that asked to switch protocols as the HTTP/1.1 request it also is
        (RFC 9110 7.8: a server that does not upgrade processes the request normally); return
        a head to parse before the bytes that follow it.

        llhttp takes `Connection: upgrade` with `Upgrade` as the end of HTTP on the connection:
        httptools ends that request with an empty body and hands back the bytes after its
        head. Those bytes start with the body the request declared, so the parser is given a
        made-up head with the request's own Content-Length or Transfer-Encoding:
        on_headers_complete ignores it, and the body that follows reaches the request, then
        the next request is parsed as usual.
        """
        framing = [b"%s: %s\r\n" % field for field in self.headers if field[0] in _BODY_FRAMING]
        if not framing:
            return b""
        self.cycle.more_body = True  # uvicorn's on_message_complete had ended it
        self.reading_head, self.reading_body = False, True
        self.upgrade_headers = self.headers
        return b"PUT / HTTP/1.1\r\n" + b"".join(framing) + b"\r\n"

    # --- parser callbacks -------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self.upgrade_headers is not None:  # the head _decline_upgrade made up
            self.headers, self.upgrade_headers = self.upgrade_headers, None
            return
        # One pass over the head: its size as parsed (target, names, values, and 4 bytes a
        # line for the separators; a head that arrived in one read was never counted in
        # data_received) and its Host lines.
        size = len(self.url) + _REQUEST_LINE_BYTES
        hosts = 0
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if name == b"host":
                hosts += 1
        if size > self.max_header_bytes:
            self._stop_parsing(self._head_too_large())
        if hosts != 1 and (hosts or self.parser.get_http_version() != "1.0"):
            # RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, any request with two.
            self._stop_parsing(
                (
                    400,
                    "Bad Request",
                    f"the request has {hosts} Host headers: one is required"
                    if hosts
                    else "an HTTP/1.1 request needs a Host header",
                )
            )
        limit = self.overload.limit
        if len(self.open_connections) >= limit or len(self.running_requests) >= limit:
            # The same test uvicorn's limit_concurrency makes; this answer is problem+json.
            app, self.app = self.app, self.overload
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            # Raises when uvicorn cannot read the request target (a CONNECT's `host:port`, a
            # path that is not ASCII): the head is then refused as one still being read.
            super().on_headers_complete()
        self.unanswered.append(self.cycle)
        self.reading_head, self.reading_body, self.head_bytes = False, True, 0
        if self.send_budget < self.body_timeout and not self.connection.get_write_buffer_size():
            self.send_budget = self.body_timeout  # it took the last response whole
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def on_message_complete(self) -> None:
        self.reading_head, self.reading_body = True, False
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()

    def shutdown(self) -> None:
        # The server is stopping (SIGTERM). A response that streams until the client leaves
        # (a watch) would hold the shutdown for its whole grace period: ask it to end now.
        super().shutdown()
        for cycle in self.unanswered:
            stop = cycle.scope.get(STOP_STREAM)
            if isinstance(stop, asyncio.Event):
                stop.set()

    def on_response_complete(self) -> None:
        if self.unanswered:
            self.unanswered.popleft()
        super().on_response_complete()
        if self.unanswered or self.connection.is_closing():
            return  # a pipelined request that super() just started is being answered
        if self.last_words is not None:
            self.connection.write(self.last_words)
            self.connection.close()
        else:
            # Idle: the next head is due header_timeout from now, timed once it begins
            # (uvicorn's keep-alive timer, armed by super(), closes a silent connection).
            self.idle_since = self.event_loop.time()

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
            self._refuse(
                408,
                "Request Timeout",
                f"the request line and headers did not arrive within {self.header_timeout:g} s",
            )

    def _body_too_slow(self) -> None:
        self.body_timer = None
        if not self.reading_body or self.connection.is_closing():
            return
        self._refuse(
            408,
            "Request Timeout",
            f"the request body did not arrive within {self.body_timeout:g} s",
        )

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


def protocol_factory(
    *, header_timeout: float, body_timeout: float, max_header_bytes: int, limit_concurrency: int
) -> "functools.partial[GuardedHttpToolsProtocol]":
    """What `kv serve` passes as uvicorn's `http`: the protocol class with these limits.

    A partial of a module-level class, so uvicorn can pickle it into worker processes. Checks
    first that the installed uvicorn has every member the class hooks (UnsupportedUvicorn).
    """
    check_uvicorn(UVICORN_CLASSES, uvicorn.__version__)  # raises UnsupportedUvicorn
    ids = RequestIds()  # for the answers the protocol writes itself
    return functools.partial(
        GuardedHttpToolsProtocol,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_header_bytes=max_header_bytes,
        overload=Overload(limit_concurrency, ids),
        ids=ids,
    )
