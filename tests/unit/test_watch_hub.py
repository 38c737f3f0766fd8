"""The watch hub: one feed per process, fanned out by prefix, each watcher bounded."""

import asyncio
import gc
import weakref
from collections.abc import AsyncGenerator, Sequence

import pytest

from kv.adapters.memory import MemoryRepository
from kv.domain.commands import Watch
from kv.domain.errors import ChangesLost, Failure, StorageUnavailable, TooManyWatchers
from kv.domain.model import Change, Key
from kv.domain.watch import WatchClosed, WatcherOverflow, WatchHub


class CountingStore(MemoryRepository):
    """Counts the feeds opened on it, and can make the next one fail."""

    def __init__(self) -> None:
        super().__init__()
        self.feeds = 0
        self.open = 0
        self.failure: Exception | None = None
        self.never_ready = False

    async def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        self.feeds += 1
        self.open += 1
        try:
            if self.never_ready:
                await asyncio.Event().wait()
            if self.failure is not None:
                raise self.failure
            async for batch in super().changes():
                yield batch
        finally:
            self.open -= 1


async def test_watchers_share_one_feed_and_see_only_their_keys() -> None:
    store = CountingStore()
    hub = WatchHub(store, max_watchers=10, timeout=1)
    apps = await hub.open(Watch("app/"))
    one = await hub.open(Watch("app/x", exact=True))
    await store.create(Key("app/x"), "1")
    await store.create(Key("app/xy"), "2")
    await store.create(Key("other"), "3")
    assert store.feeds == 1
    assert [c.key for c in await apps.next(idle=1)] == ["app/x", "app/xy"]
    assert [c.key for c in await one.next(idle=1)] == ["app/x"]
    assert await one.next(idle=0.01) == []  # idle: nothing more
    assert apps.sent == 2 and one.sent == 1


async def test_a_busy_watcher_still_gets_an_empty_list_every_idle_period() -> None:
    """The idle timer is set by a wait and kept across the waits that changes end: one timer
    per period however many changes come, and a heartbeat at least that often."""
    store = MemoryRepository()
    hub = WatchHub(store, max_watchers=10, timeout=1)
    watcher = await hub.open(Watch(""))

    async def write_soon(value: str) -> None:
        await asyncio.sleep(0.01)
        await store.upsert(Key("k"), value)

    loop = asyncio.get_running_loop()
    answers: list[int] = []
    started = loop.time()
    for revision in range(40):  # a change every ~20 ms, ~800 ms in all
        writing = asyncio.ensure_future(write_soon(str(revision)))
        answers.append(len(await watcher.next(idle=0.1)))
        await writing
        await asyncio.sleep(0.01)
    assert 0 in answers, answers  # heartbeats came while the changes did
    assert answers.count(0) <= (loop.time() - started) / 0.1 + 1, answers
    hub.close(watcher)


async def test_a_closed_watcher_is_ended_and_its_idle_timer_lets_it_go() -> None:
    """A reader that leaves mid-wait (a client gone) closes its watcher: it is ended, and
    nothing keeps it (its backlog with it) alive until its idle timer would have fired."""
    hub = WatchHub(MemoryRepository(), max_watchers=10, timeout=1)
    watcher = await hub.open(Watch(""))
    waiting = asyncio.ensure_future(watcher.next(idle=60))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.wait([waiting])  # not awaited itself: its CancelledError would hold frames
    assert waiting.cancelled()
    hub.close(watcher)
    async with asyncio.timeout(5):  # an open watcher would wait its 60 s
        with pytest.raises(WatchClosed):
            await watcher.next(idle=60)
    gone = weakref.ref(watcher)
    del watcher, waiting
    gc.collect()  # the WatchClosed it holds refers back to it, by its traceback
    assert gone() is None


async def test_the_feed_stops_with_the_last_watcher_and_starts_with_the_next() -> None:
    store = CountingStore()
    hub = WatchHub(store, max_watchers=10, timeout=1)
    watcher = await hub.open(Watch(""))
    hub.close(watcher)
    await asyncio.sleep(0.01)
    assert store.open == 0 and len(hub) == 0
    again = await hub.open(Watch(""))
    await store.create(Key("k"), "1")
    assert [c.key for c in await again.next(idle=1)] == ["k"]
    assert store.feeds == 2


async def test_the_limit_of_watchers_holds() -> None:
    hub = WatchHub(CountingStore(), max_watchers=2, timeout=1)
    await hub.open(Watch(""))
    await hub.open(Watch(""))
    with pytest.raises(TooManyWatchers):
        await hub.open(Watch(""))


async def test_a_slow_watcher_overflows_alone_and_its_backlog_is_freed() -> None:
    store = CountingStore()
    hub = WatchHub(store, max_watchers=10, timeout=1, max_backlog=5)
    slow = await hub.open(Watch(""))
    fast = await hub.open(Watch(""))
    for i in range(6):
        await store.upsert(Key("k"), str(i))
        assert len(await fast.next(idle=1)) == 1
    with pytest.raises(WatcherOverflow):
        await slow.next(idle=1)
    assert not slow._backlog


@pytest.mark.parametrize(
    "failure", [StorageUnavailable("redis", Failure.UNREACHABLE), ChangesLost()]
)
async def test_a_feed_that_fails_ends_every_watcher_and_a_new_one_retries(
    failure: Exception,
) -> None:
    store = CountingStore()
    hub = WatchHub(store, max_watchers=10, timeout=1)
    store.failure = failure
    with pytest.raises(type(failure)):
        await hub.open(Watch(""))
    assert len(hub) == 0
    store.failure = None
    watcher = await hub.open(Watch(""))
    await store.create(Key("k"), "1")
    assert len(await watcher.next(idle=1)) == 1


async def test_a_feed_that_never_subscribes_times_out() -> None:
    store = CountingStore()
    store.never_ready = True
    hub = WatchHub(store, max_watchers=10, timeout=0.05, backend="redis")
    with pytest.raises(StorageUnavailable) as caught:
        await hub.open(Watch(""))
    assert caught.value.failure is Failure.TIMEOUT
    assert len(hub) == 0


async def test_closing_the_hub_ends_every_watcher() -> None:
    hub = WatchHub(CountingStore(), max_watchers=10, timeout=1)
    watcher = await hub.open(Watch(""))
    await hub.aclose()
    with pytest.raises(WatchClosed):
        await watcher.next(idle=1)
