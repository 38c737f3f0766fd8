"""A deadline that measures Redis, not kv's own event loop.

`asyncio.timeout` fails a call when its time is up, whatever kept it waiting. When kv's event
loop is held by something else (validating a large request body can take half a second), a
Redis reply that arrived in time sits unread in the socket while the timer's moment passes;
the timer then fires first (the loop runs due timers in the same turn as the I/O that would
have woken the reader) and a healthy Redis gets the blame: a 503 "did not answer within 2 s".

`RedisDeadline` fails the call only when the loop was on time to see it fail. When its timer
fires late (the loop was stalled) or the replies progressed since it was last checked, it
gives the reader a short grace instead, so what was already received gets read; it never adds
more than `timeout` in all. A Redis that is silent still fails within `timeout` plus one grace.
"""

import asyncio
from types import TracebackType

# A timer that fires this much after its moment saw the loop stalled (not merely busy). Timers
# of a healthy loop fire within a millisecond or two, a little more on a loaded machine.
STALL_SECONDS = 0.02
# How long the reader is given to catch up after a stall or while replies still come in.
GRACE_SECONDS = 0.02


class RedisDeadline:
    """`async with RedisDeadline(timeout):` raises TimeoutError when the block has waited
    `timeout` seconds for Redis (see the module docstring); `progress()` tells it that a
    reply was read."""

    __slots__ = ("_cap", "_handle", "_loop", "_progress", "_scope", "_seen", "_timeout", "_when")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._scope = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._progress = 0
        self._seen = 0
        self._when = 0.0
        self._cap = 0.0

    def progress(self) -> None:
        self._progress += 1

    async def __aenter__(self) -> "RedisDeadline":
        await self._scope.__aenter__()
        now = self._loop.time()
        self._when = now + self._timeout
        self._cap = self._when + self._timeout
        self._handle = self._loop.call_at(self._when, self._check)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._scope.__aexit__(kind, error, traceback)
        return None

    def _check(self) -> None:
        now = self._loop.time()
        stalled = now - self._when > STALL_SECONDS
        if (stalled or self._progress != self._seen) and now < self._cap:
            self._seen = self._progress
            self._when = now + GRACE_SECONDS
            self._handle = self._loop.call_at(self._when, self._check)
            return
        self._handle = None
        self._scope.reschedule(now)  # the scope cancels the task: TimeoutError on exit
