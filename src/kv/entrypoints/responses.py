"""The hot path's answers: a body already encoded, headers built directly as byte pairs.

Starlette's Response builds its headers through MutableHeaders (~2 µs a response); a record
and a problem (a 404 or a 409 is as common an answer as a record) need two or three pairs.
"""

from starlette.responses import Response


class ReadyResponse(Response):
    """`body` with `status`, its content-length and content-type, and `more` headers."""

    def __init__(
        self,
        body: bytes,
        status: int,
        content_type: bytes,
        more: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", content_type),
        ]
        if more:
            self.raw_headers += more
