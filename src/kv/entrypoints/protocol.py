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
from typing import NoReturn

import httptools
import uvicorn

from kv.entrypoints.coalesce import CoalescingTransport
from kv.entrypoints.deadlines import ConnectionDeadlines
from kv.entrypoints.raw_answers import Overload
from kv.entrypoints.request_ids import RequestIds
from kv.entrypoints.uvicorn_hooks import UVICORN_CLASSES, UnsupportedUvicorn, check_uvicorn

__all__ = ["UnsupportedUvicorn", "protocol_factory"]

# An asyncio.Event a streaming response puts in its scope: set when the server shuts down.
STOP_STREAM = "kv.stop_stream"

_BODY_FRAMING = (b"content-length", b"transfer-encoding")
# A head's bytes besides its target, names and values: the rest of the request line (with
# kv's longest method) and the CRLF that ends the head.
_REQUEST_LINE_BYTES = len(b"DELETE  HTTP/1.1\r\n\r\n")


class _Refused(Exception):
    """Raised by a parser callback to stop httptools at a head the protocol refuses."""


class GuardedHttpToolsProtocol(ConnectionDeadlines):
    """HttpToolsProtocol plus the deadlines and limits of the module doc, one per connection.

    Its state, and what it does when a deadline passes or a request is refused, are the base
    class's (kv.entrypoints.deadlines); here are the events that drive them."""

    # --- connection events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.event_loop = asyncio.get_running_loop()
        self.connection = CoalescingTransport(transport, self.event_loop)
        super().connection_made(self.connection)
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
        self.connection.flush()  # the response, head and body, in one write
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
