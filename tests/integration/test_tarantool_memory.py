"""Freed memory is writable again after Tarantool was full (issue 20, item 3).

On Tarantool 2.6 (Debian's), with the slab allocator's default factor, values of varied sizes
filled memtx with a handful of records (every size class above ~64 KiB holds a 16 MiB slab),
and once they were deleted, writes of 100 KB and more still failed until a restart; after
memtx had been full of small records, tuples over ~1 MiB (allocated outside the slabs, under
a quota the slabs had taken) could never be stored again. The instance here has a small
memtx_memory, so it fills fast.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from kv.adapters.tarantool import TarantoolRepository, open_tarantool_repository
from kv.domain import txn
from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Change, Entry, Key, Record
from tests.servers.tarantool import TarantoolServer

MEMTX_MEMORY = 128 * 1024 * 1024
# Value sizes from 100 kB to 3.8 MB (the largest a 1 MiB body can become), 1.25 apart.
SIZES = [int(100_000 * 1.25**k) for k in range(17)]


@pytest.fixture
async def small_memory(tmp_path: Path) -> AsyncIterator[TarantoolRepository]:
    server = TarantoolServer(tmp_path, env={"KV_TARANTOOL_MEMTX_MEMORY": str(MEMTX_MEMORY)})
    server.start()
    try:
        url = server.settings()["tarantool_url"]
        async with asynccontextmanager(open_tarantool_repository)(url, "kv", 5.0) as repository:
            yield repository
    finally:
        server.stop()


async def fill(repository: TarantoolRepository, prefix: str) -> list[Key]:
    """Create values of every size in turn until Tarantool refuses one; the keys written."""
    written: list[Key] = []
    while True:
        key = Key(f"{prefix}{len(written)}")
        try:
            await repository.create(key, "x" * SIZES[len(written) % len(SIZES)])
        except StorageUnavailable as refused:
            assert refused.failure is Failure.REFUSED
            return written
        written.append(key)


async def test_after_memory_was_full_and_emptied_values_of_any_size_are_stored(
    small_memory: TarantoolRepository,
) -> None:
    repository = small_memory
    for round_ in range(2):  # full, emptied, and full again: nothing is lost for good
        written = await fill(repository, f"fill{round_}/")
        stored = sum(SIZES[i % len(SIZES)] for i in range(len(written)))
        # The default factor stored 14 of these in 256 MiB (2 MB); most of it holds values.
        assert stored > MEMTX_MEMORY / 4, (len(written), stored)
        for key in written:
            assert isinstance(await repository.delete(key), int)
        for size in (100_000, 400_000, 1_000_000, 2_000_000, 3_800_000):
            key = Key(f"after{round_}/{size}")
            assert await repository.create(key, "y" * size) == Record(key, "y" * size, 1)
            assert await repository.delete(key) == 1


async def test_after_memory_was_full_of_small_values_large_ones_are_stored(
    small_memory: TarantoolRepository,
) -> None:
    repository = small_memory
    written: list[Key] = []
    refused = False
    while not refused:  # 10 kB values, 500 at a time, until Tarantool refuses some
        keys = [Key(f"small/{len(written) + i}") for i in range(500)]
        answers = await asyncio.gather(
            *(repository.create(key, "s" * 10_000) for key in keys), return_exceptions=True
        )
        refused = any(isinstance(answer, StorageUnavailable) for answer in answers)
        written += [key for key, answer in zip(keys, answers, strict=True) if answer is not None]
    for start in range(0, len(written), 500):
        await asyncio.gather(*(repository.delete(key) for key in written[start : start + 500]))
    for size in (1_000_000, 2_000_000, 3_800_000):
        key = Key(f"large/{size}")
        assert await repository.create(key, "l" * size) == Record(key, "l" * size, 1)
        assert await repository.delete(key) == 1


async def test_a_value_stored_in_parts_reads_back_whole_everywhere(
    small_memory: TarantoolRepository,
) -> None:
    repository = small_memory
    key = Key("parts/a")
    # 3.8 MB: eight parts; every byte position is told apart from its neighbours.
    large = "".join(chr(65 + i % 26) for i in range(3_800_000))
    changes = repository.changes()
    assert list(await anext(changes)) == []
    try:
        assert await repository.create(key, large) == Record(key, large, 1)
        assert await repository.get(key) == Record(key, large, 1)
        page = await repository.list("parts/", after=None, limit=10, values=True)
        assert page.entries == [Entry(key, 1, None, large)]
        # Shorter, then longer again, in a transaction: no part of an earlier value stays.
        shorter = large[:600_000]
        assert await repository.transact([txn.Put(key, shorter)]) == [Record(key, shorter, 2)]
        assert await repository.transact([txn.Get(key)]) == [Record(key, shorter, 2)]
        assert await repository.upsert(key, large[::-1]) == Record(key, large[::-1], 3)
        assert await repository.get(key) == Record(key, large[::-1], 3)
        async with asyncio.timeout(5):
            received: list[Change] = []
            while len(received) < 3:
                received += await anext(changes)
        assert [c.value for c in received] == [large, shorter, large[::-1]]
    finally:
        await changes.aclose()
    assert await repository.delete(key) == 3
    assert await repository.get(key) is None
