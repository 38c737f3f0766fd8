"""Server-Sent Events, decoded from bytes as they arrive (the WHATWG rules kv's stream uses:
`event:` and `data:` fields, comment lines starting with `:`, a blank line ending an event;
lines may end in LF, CRLF or CR)."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str  # "message" when the server named none
    data: str


class SSEDecoder:
    """Feed it the body's bytes in whatever chunks they come; it returns whole events."""

    def __init__(self) -> None:
        self._buffer = b""
        # The last chunk ended in CR: an LF that starts the next one belongs to it.
        self._after_cr = False
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        if self._after_cr and chunk:
            chunk = chunk.removeprefix(b"\n")
            self._after_cr = False
        self._buffer += chunk
        events: list[ServerEvent] = []
        while (line := self._next_line()) is not None:
            dispatched = self._line(line)
            if dispatched is not None:
                events.append(dispatched)
        return events

    def _next_line(self) -> bytes | None:
        buffer = self._buffer
        cr, lf = buffer.find(b"\r"), buffer.find(b"\n")
        if lf >= 0 and (cr < 0 or lf < cr):
            self._buffer = buffer[lf + 1 :]
            return buffer[:lf]
        if cr < 0:
            return None
        if cr + 1 == len(buffer):
            self._after_cr = True
        skip = 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
        self._buffer = buffer[cr + skip :]
        return buffer[:cr]

    def _line(self, raw: bytes) -> ServerEvent | None:
        line = raw.decode("utf-8", "replace")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: kv's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # `id`, `retry` and unknown fields: kv sends none, nothing to do

    def _dispatch(self) -> ServerEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerEvent(event, "\n".join(data))
