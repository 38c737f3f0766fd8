"""One send() per response: the head and the body of an answer written together.

uvicorn writes a response's head as soon as the app sends `http.response.start`, and its
body in a second write: two send() system calls and, with TCP_NODELAY, two packets for every
answer of a few hundred bytes. CoalescingTransport holds what is written until the response
is complete (kv serve's protocol then calls `flush`), or at the latest until the event loop's
next turn (a streamed response, a `100 Continue`, anything written outside a response).
Closing flushes first; `abort` drops what is held, as it drops the transport's own buffer.

Measured with wrk against `kv serve` on memory (bench/ab.py, README Performance): see there.
"""

import asyncio
from typing import Any


class CoalescingTransport(asyncio.Transport):
    """`transport` with its writes held until `flush` or the loop's next turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._flush_due = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is held, in one write; nothing once the transport is closing."""
        self._flush_due = False
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
