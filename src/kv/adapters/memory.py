"""The in-process backend: a dict, with an ordered index of keys and one of expiry times.

Atomicity: every method runs from start to end without an `await`, so on the event loop no
other request can run between its check and its write; a transaction is applied the same
way. One process only (the container refuses more than one worker with this backend).

Listing: `sortedcontainers.SortedList` keeps the keys in order (code-point order, which is
the order of their UTF-8 bytes), so a page is O(log n + limit). Only creations and deletions
touch it; an overwrite is a dict assignment.

Expiry, by this process's clock (`clock`, milliseconds since the epoch): a record is
checked when met, and `sweep` (run every SWEEP_SECONDS by the resource below) removes the
records whose time has come, in batches of SWEEP_BATCH with a turn of the event loop between
them, found through a SortedList of (expires_at, key), never by a scan of every key.
"""

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

from sortedcontainers import SortedList

from kv.domain import txn
from kv.domain.errors import ChangesLost
from kv.domain.model import Change, Entry, Key, Page, Record, Stale

SWEEP_SECONDS = 0.25
SWEEP_BATCH = 250  # ~1 ms of removals (4 µs each, measured) between two turns of the loop
# Changes a subscriber may have unread before it is cut off (the feed's consumer, the watch
# hub, reads them within a turn of the event loop; this bounds a stuck one).
MAX_UNREAD_CHANGES = 100_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class _Subscriber:
    """The unread changes of one `changes()` iterator."""

    def __init__(self) -> None:
        self.changes: deque[Change] = deque()
        self.ready = asyncio.Event()
        self.lost = False

    def push(self, change: Change) -> None:
        if len(self.changes) >= MAX_UNREAD_CHANGES:
            self.lost = True
        else:
            self.changes.append(change)
        self.ready.set()


Stored = tuple[str, str, int, int | None]
"""A record as stored: (key, value, revision, expires_at), the fields of a Record.

A plain tuple of strings and integers, which the cyclic garbage collector stops tracking after
its first pass: with records as Record (a tuple subclass, always tracked), every full
collection walked them all: 155 ms with 1M keys (measured), a pause of every request."""

_record = functools.partial(tuple.__new__, Record)  # a Stored as a Record, without copying


class MemoryRepository:
    def __init__(self, *, clock: Callable[[], int] = wall_clock_ms) -> None:
        self._records: dict[str, Stored] = {}
        self._keys = SortedList()
        self._expiry = SortedList()  # (expires_at, key) of every record that has one
        self._clock = clock
        self._subscribers: list[_Subscriber] = []

    def __len__(self) -> int:
        return len(self._records)

    # --- single keys ------------------------------------------------------------------------

    async def get(self, key: Key) -> Record | None:
        stored = self._records.get(key)
        if stored is None or (stored[3] is not None and stored[3] <= self._clock()):
            return None
        return _record(stored)

    async def create(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record | None:
        if self._live(key) is not None:
            return None
        return self._write(key, value, 1, ttl_ms)

    async def replace(
        self, key: Key, value: str, *, if_revision: int | None = None, ttl_ms: int | None = None
    ) -> Record | Stale | None:
        current = self._live(key)
        if current is None:
            return None
        if if_revision is not None and current.revision != if_revision:
            return Stale(current.revision)
        return self._write(key, value, current.revision + 1, ttl_ms, current)

    async def upsert(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record:
        current = self._live(key)
        revision = 1 if current is None else current.revision + 1
        return self._write(key, value, revision, ttl_ms, current)

    async def delete(self, key: Key, *, if_revision: int | None = None) -> int | Stale | None:
        current = self._live(key)
        if current is None:
            return None
        if if_revision is not None and current.revision != if_revision:
            return Stale(current.revision)
        self._remove(current, expired=False)
        return current.revision

    # --- listing and transactions -----------------------------------------------------------

    async def list(self, prefix: str, *, after: str | None, limit: int, values: bool) -> Page:
        if after is not None and after >= prefix:
            keys = self._keys.irange(minimum=after, inclusive=(False, True))
        else:
            keys = self._keys.irange(minimum=prefix)
        entries: list[Entry] = []
        now = self._clock()
        for key in keys:
            if not key.startswith(prefix):
                break
            record = _record(self._records[key])
            if record.expires_at is not None and record.expires_at <= now:
                continue
            if len(entries) == limit:
                return Page(entries, more=True)
            value = record.value if values else None
            entries.append(Entry(key, record.revision, record.expires_at, value))
        return Page(entries, more=False)

    async def transact(self, operations: Sequence[txn.Op]) -> Sequence[txn.Result] | txn.Abort:
        found = [self._live(op.key) for op in operations]
        for index, (op, current) in enumerate(zip(operations, found, strict=True)):
            failure = _condition(op, current)
            if failure is not None:
                return txn.Abort(index, failure)
        results: list[txn.Result] = []
        for op, current in zip(operations, found, strict=True):
            match op:
                case txn.Create(key, value, ttl_ms):
                    results.append(self._write(key, value, 1, ttl_ms))
                case txn.Put(key, value, _, ttl_ms):
                    assert current is not None
                    results.append(self._write(key, value, current.revision + 1, ttl_ms, current))
                case txn.Delete():
                    assert current is not None
                    self._remove(current, expired=False)
                    results.append(current.revision)
                case txn.Get():
                    results.append(current)
                case txn.Check():
                    results.append(None if current is None else current.revision)
        return results

    # --- changes ----------------------------------------------------------------------------

    async def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        subscriber = _Subscriber()
        self._subscribers.append(subscriber)
        try:
            yield ()
            while True:
                await subscriber.ready.wait()
                subscriber.ready.clear()
                if subscriber.lost:
                    raise ChangesLost()
                batch = list(subscriber.changes)
                subscriber.changes.clear()
                if batch:
                    yield batch
        finally:
            self._subscribers.remove(subscriber)

    # --- the rest ---------------------------------------------------------------------------

    async def clear(self) -> None:
        for key in list(self._keys):
            self._remove(_record(self._records[key]), expired=False)

    async def ping(self) -> None:
        return None

    async def sweep(self) -> int:
        """Remove every record whose expiry has come, in bounded batches; how many."""
        removed = 0
        while True:
            now = self._clock()
            due: list[str] = []
            for expires_at, key in self._expiry:  # in order of expiry
                if expires_at > now or len(due) == SWEEP_BATCH:
                    break
                due.append(key)
            for key in due:
                self._remove(_record(self._records[key]), expired=True)
            removed += len(due)
            if len(due) < SWEEP_BATCH:
                return removed
            await asyncio.sleep(0)  # let requests run between two batches

    # --- internals (none awaits) ------------------------------------------------------------

    def _live(self, key: str) -> Record | None:
        """The record at `key` unless it has expired; an expired one is removed first, so its
        expiry reaches watchers before whatever this write does to the key."""
        stored = self._records.get(key)
        if stored is None:
            return None
        record = _record(stored)
        if record.expires_at is not None and record.expires_at <= self._clock():
            self._remove(record, expired=True)
            return None
        return record

    def _write(
        self,
        key: str,
        value: str,
        revision: int,
        ttl_ms: int | None,
        current: Record | None = None,
    ) -> Record:
        expires_at = None if ttl_ms is None else self._clock() + ttl_ms
        stored = self._records[key] = (key, value, revision, expires_at)
        if current is None:
            self._keys.add(key)
        elif current.expires_at is not None:
            self._expiry.remove((current.expires_at, key))
        if expires_at is not None:
            self._expiry.add((expires_at, key))
        if self._subscribers:
            self._publish(Change(key, revision, value, expires_at))
        return _record(stored)

    def _remove(self, record: Record, *, expired: bool) -> None:
        key = record.key
        del self._records[key]
        self._keys.remove(key)
        if record.expires_at is not None:
            self._expiry.remove((record.expires_at, key))
        if self._subscribers:
            self._publish(Change(key, record.revision, None, expired=expired))

    def _publish(self, change: Change) -> None:
        for subscriber in self._subscribers:
            subscriber.push(change)


def _condition(op: txn.Op, current: Record | None) -> txn.Failure | None:
    """Why `op` cannot be applied to the key's `current` record, None when it can."""
    match op:
        case txn.Create():
            return None if current is None else txn.Failure.EXISTS
        case txn.Put(if_revision=expected) | txn.Delete(if_revision=expected):
            if current is None:
                return txn.Failure.NOT_FOUND
            if expected is not None and current.revision != expected:
                return txn.Failure.REVISION_MISMATCH
            return None
        case txn.Check(revision=None):
            return None if current is None else txn.Failure.EXISTS
        case txn.Check(revision=revision):
            if current is None:
                return txn.Failure.NOT_FOUND
            return None if current.revision == revision else txn.Failure.REVISION_MISMATCH
    return None  # a get is never a condition


async def open_memory_repository(
    clock: Callable[[], int] = wall_clock_ms,
) -> AsyncIterator[MemoryRepository]:
    """The Resource that the container starts: the store and its expiry sweeper."""
    repository = MemoryRepository(clock=clock)
    sweeper = asyncio.get_running_loop().create_task(_sweep_forever(repository))
    try:
        yield repository
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


async def _sweep_forever(repository: MemoryRepository) -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        await repository.sweep()
