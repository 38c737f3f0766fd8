"""The memory backend's expiry, its clock driven by the test: checked when met, swept in
bounded batches in order of expiry, each expiry a change for watchers."""

import asyncio

from kv.adapters.memory import SWEEP_BATCH, MemoryRepository
from kv.domain import txn
from kv.domain.model import Change, Key, Record

START = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


async def test_a_record_is_gone_from_its_expiry_and_the_sweep_reclaims_it() -> None:
    clock = Clock()
    store = MemoryRepository(clock=clock)
    key = Key("k")
    assert await store.create(key, "1", ttl_ms=100) == Record(key, "1", 1, START + 100)
    clock.now += 99
    assert await store.get(key) is not None
    clock.now += 1
    assert await store.get(key) is None
    assert len(store) == 1  # not yet reclaimed: a read does not write
    assert await store.sweep() == 1
    assert len(store) == 0 and not store._expiry and not store._keys


async def test_a_transaction_that_meets_an_expired_record_sees_it_absent() -> None:
    clock = Clock()
    store = MemoryRepository(clock=clock)
    key = Key("k")
    await store.create(key, "1", ttl_ms=100)
    clock.now += 100
    assert await store.transact([txn.Check(key, None)]) == [None]


async def test_the_sweep_takes_only_what_is_due_in_order_and_in_batches() -> None:
    clock = Clock()
    store = MemoryRepository(clock=clock)
    for i in range(SWEEP_BATCH * 2 + 5):
        await store.create(Key(f"due{i}"), "1", ttl_ms=10 + i % 7)
    await store.create(Key("later"), "1", ttl_ms=10_000)
    await store.create(Key("never"), "1")
    clock.now += 20
    assert await store.sweep() == SWEEP_BATCH * 2 + 5
    assert sorted(store._records) == ["later", "never"]


async def test_an_overwrite_moves_or_removes_the_expiry() -> None:
    clock = Clock()
    store = MemoryRepository(clock=clock)
    key = Key("k")
    await store.create(key, "1", ttl_ms=10)
    await store.replace(key, "2", ttl_ms=1000)
    await store.upsert(Key("j"), "1", ttl_ms=10)
    await store.upsert(Key("j"), "2")
    clock.now += 500
    assert await store.sweep() == 0
    assert await store.get(key) == Record(key, "2", 2, START + 1000)
    assert len(store._expiry) == 1


async def test_expiries_reach_the_feed_before_what_replaces_them() -> None:
    clock = Clock()
    store = MemoryRepository(clock=clock)
    feed = store.changes()
    assert list(await anext(feed)) == []
    key = Key("k")
    await store.create(key, "1", ttl_ms=10)
    clock.now += 10
    await store.create(key, "2")  # meets the expired record: its expiry is a change first
    await store.create(Key("s"), "1", ttl_ms=5)
    clock.now += 5
    await store.sweep()
    changes = [change for batch in [await anext(feed)] for change in batch]
    assert changes == [
        Change(key, 1, "1", START + 10),
        Change(key, 1, None, expired=True),
        Change(key, 1, "2"),
        Change(Key("s"), 1, "1", START + 15),
        Change(Key("s"), 1, None, expired=True),
    ]
    await feed.aclose()


async def test_a_sweep_of_many_lets_other_tasks_run_between_batches() -> None:
    clock = Clock()
    store = MemoryRepository(clock=clock)
    for i in range(SWEEP_BATCH * 3):
        await store.create(Key(f"k{i}"), "1", ttl_ms=1)
    clock.now += 1
    ran_during: list[int] = []

    async def other() -> None:
        for _ in range(10):
            ran_during.append(len(store))
            await asyncio.sleep(0)

    await asyncio.gather(store.sweep(), other())
    assert any(0 < size < SWEEP_BATCH * 3 for size in ran_during), ran_during
