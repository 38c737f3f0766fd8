"""Request ids: taken from `X-Request-ID` when usable, else generated.

One generator serves the app's middleware and the HTTP protocol's own answers (431, 408,
malformed requests, overload), so every response carries an id of the same form.
"""

import itertools
import secrets

MAX_REQUEST_ID = 128


class RequestIds:
    """Generated ids: a random prefix per generator and a counter, unique across processes
    and restarts, and ~10x cheaper than uuid4() per request."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(6) + "-"
        self.counter = itertools.count(1)

    def __reduce__(self) -> tuple[type["RequestIds"], tuple[()]]:
        # A copy in another process (uvicorn pickles `kv serve`'s protocol factory into each
        # worker) starts its own prefix and count, or two workers would issue the same ids.
        return RequestIds, ()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"

    def of(self, headers: list[tuple[bytes, bytes]]) -> str:
        """The request's own id when usable, else a new one."""
        return given_request_id(headers) or self.new()


def given_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The `X-Request-ID` a client sent, if it is 1 to 128 printable ASCII characters."""
    for name, value in headers:
        if name == b"x-request-id":
            if (
                0 < len(value) <= MAX_REQUEST_ID
                and value.isascii()
                and value.decode().isprintable()
            ):
                return value.decode()
            break  # unusable: replaced rather than echoed
    return None
