"""Freed memory is writable again after Tarantool was full (issue 20, item 3).

On Tarantool 2.6 (Debian's), with the slab allocator's default factor, values of varied sizes
filled memtx with a handful of records (every size class above ~64 KiB holds a 16 MiB slab),
and once they were deleted, writes of 100 KB and more still failed until a restart. The
instance here has the smallest memtx_memory Tarantool takes, so it fills fast.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from kv.adapters.tarantool import TarantoolRepository, open_tarantool_repository
from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Key, Record
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
