"""A deadline for a Tarantool call that measures Tarantool, not kv's own event loop."""

import asyncio
from typing import Any

# A deadline that comes while the answer may already be waiting in the socket is put off
# once by this much, so that the loop reads it first (see `Deadline`).
DEADLINE_GRACE_SECONDS = 0.005


class Deadline:
    """Fails `call` with TimeoutError once `seconds` pass without Tarantool's answer.

    Not asynctnt's own timer: under uvloop, timers run before the loop reads its sockets, so
    after kv's own loop was held up (a large body being parsed, say) that timer fired before
    the answer that had come in time was read, and kv blamed Tarantool for its own stall
    (issue 20, item 2). Here a deadline that comes while `call` is still pending waits
    DEADLINE_GRACE_SECONDS more, in which the loop reads whatever has arrived.
    """

    __slots__ = ("call", "loop", "seconds", "timer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, call: "asyncio.Future[Any]", seconds: float
    ) -> None:
        self.call = call
        self.loop = loop
        self.seconds = seconds
        self.timer = loop.call_later(seconds, self.expire, True)
        call.add_done_callback(self.cancel)

    def cancel(self, _: object) -> None:
        self.timer.cancel()

    def expire(self, grace: bool) -> None:
        if self.call.done():
            return
        if grace:
            self.timer = self.loop.call_later(DEADLINE_GRACE_SECONDS, self.expire, False)
        else:
            message = f"Tarantool did not answer within {self.seconds:g} s"
            self.call.set_exception(TimeoutError(message))
