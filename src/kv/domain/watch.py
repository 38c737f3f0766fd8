"""Watching: one subscription to the backend's change feed per process, fanned out to every
watcher whose key or prefix matches.

The feed (Repository.changes) is started by the first watcher and stopped when the last one
leaves. A watcher holds the changes it has not taken yet, at most `max_backlog`: one that
falls further behind is ended with WatcherOverflow (its memory freed), so a slow reader never
slows writers or other watchers. When the feed fails, every watcher is ended with the
feed's error (StorageUnavailable, ChangesLost); the next watcher starts a new feed.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

from kv.domain.commands import Watch
from kv.domain.errors import ChangesLost, Failure, KVError, StorageUnavailable, TooManyWatchers
from kv.domain.model import Change
from kv.domain.ports import Repository

MAX_BACKLOG = 10_000


class WatcherOverflow(KVError):
    """The watcher fell more than `limit` changes behind."""

    def __init__(self, limit: int) -> None:
        super().__init__(None)
        self.limit = limit


class WatchClosed(KVError):
    """The service is stopping: the watcher's stream ends."""

    def __init__(self) -> None:
        super().__init__(None)


class Watcher:
    """One client's view of the changes to `watch`'s keys, taken with `next`."""

    def __init__(self, watch: Watch, *, max_backlog: int) -> None:
        self.watch = watch
        self.sent = 0
        self._backlog: deque[Change] = deque()
        self._max_backlog = max_backlog
        self._wake = asyncio.Event()
        self._end: KVError | None = None
        # Wakes `next` when it has waited `idle` seconds; armed by a wait, and kept across
        # the waits that changes end, so that a busy watcher sets one timer per `idle`
        # rather than one per wait.
        self._idle_timer: asyncio.TimerHandle | None = None

    def push(self, change: Change) -> None:
        if self._end is not None:
            return
        if len(self._backlog) >= self._max_backlog:
            self.end(WatcherOverflow(self._max_backlog))
            return
        self._backlog.append(change)
        self._wake.set()

    def end(self, error: KVError) -> None:
        if self._end is None:
            self._end = error
            self._backlog.clear()
            self._wake.set()
            if self._idle_timer is not None:
                self._idle_timer.cancel()

    def _idle(self) -> None:
        self._idle_timer = None
        self._wake.set()

    async def next(self, idle: float) -> list[Change]:
        """The changes received since the last call, waiting for one; an empty list when the
        idle timer went off first. A wait sets the timer, `idle` seconds ahead, unless it is
        set: an idle watcher gets an empty list every `idle` seconds, a busy one at most that
        often. Raises the error that ended the watcher."""
        if not self._backlog and self._end is None:
            if self._idle_timer is None:
                self._idle_timer = asyncio.get_running_loop().call_later(idle, self._idle)
            await self._wake.wait()
        self._wake.clear()
        if self._end is not None:
            raise self._end
        changes = list(self._backlog)
        self._backlog.clear()
        self.sent += len(changes)
        return changes


class WatchHub:
    """Every watcher of one process, and the one feed that serves them."""

    def __init__(
        self,
        repository: Repository,
        *,
        max_watchers: int,
        timeout: float,
        backend: str = "",
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._repository = repository
        self._backend = backend
        self._max_watchers = max_watchers
        self._timeout = timeout
        self._max_backlog = max_backlog
        self._watchers: set[Watcher] = set()
        self._feed: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._watchers)

    async def open(self, watch: Watch) -> Watcher:
        """A watcher that receives every matching change committed from now on.

        Raises TooManyWatchers over the limit, StorageUnavailable when the backend cannot
        subscribe (within the timeout).
        """
        if len(self._watchers) >= self._max_watchers:
            raise TooManyWatchers(self._max_watchers)
        watcher = Watcher(watch, max_backlog=self._max_backlog)
        self._watchers.add(watcher)
        try:
            if self._feed is None:
                self._start_feed()
            assert self._subscribed is not None
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(self._subscribed)
        except TimeoutError:
            self.close(watcher)
            raise StorageUnavailable(self._backend, Failure.TIMEOUT) from None
        except BaseException:
            self.close(watcher)
            raise
        return watcher

    def close(self, watcher: Watcher) -> None:
        """Stop feeding `watcher`, and end it: its idle timer is cancelled with it, so that
        a watcher whose reader left is not kept alive until the timer would have fired."""
        watcher.end(WatchClosed())
        self._watchers.discard(watcher)
        if not self._watchers and self._feed is not None:
            self._feed.cancel()
            self._feed = None

    async def aclose(self) -> None:
        """End every watcher (the service is stopping) and the feed."""
        for watcher in list(self._watchers):
            self.close(watcher)

    def _start_feed(self) -> None:
        loop = asyncio.get_running_loop()
        self._subscribed = loop.create_future()
        self._feed = loop.create_task(self._run(self._subscribed))

    async def _run(self, subscribed: "asyncio.Future[None]") -> None:
        try:
            async with contextlib.aclosing(self._repository.changes()) as changes:
                async for batch in changes:
                    if not subscribed.done():
                        subscribed.set_result(None)
                    self._fan_out(batch)
        except (StorageUnavailable, ChangesLost) as exc:
            if not subscribed.done():
                subscribed.set_exception(exc)
            for watcher in list(self._watchers):
                watcher.end(exc)
                self.close(watcher)
        finally:
            if not subscribed.done():
                subscribed.cancel()
            if self._feed is asyncio.current_task():
                self._feed = None

    def _fan_out(self, batch: Sequence[Change]) -> None:
        watchers = self._watchers
        for change in batch:
            key = change.key
            for watcher in watchers:
                if watcher.watch.matches(key):
                    watcher.push(change)
