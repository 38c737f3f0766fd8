"""The Tarantool change feed beyond the contract suite: several kv processes, a feed that
falls behind, a Tarantool that goes away."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from kv.adapters.tarantool import TarantoolRepository, open_tarantool_repository
from kv.domain.errors import ChangesLost, Failure, StorageUnavailable
from kv.domain.model import Change, Key
from tests.servers.tarantool import TarantoolServer

RING = 100  # KV_TARANTOOL_FEED_CHANGES of the instance here


def opened(server: TarantoolServer) -> AbstractAsyncContextManager[TarantoolRepository]:
    url = server.settings()["tarantool_url"]
    return asynccontextmanager(open_tarantool_repository)(url, "kv", 2.0)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TarantoolServer]:
    server = TarantoolServer(tmp_path, env={"KV_TARANTOOL_FEED_CHANGES": str(RING)})
    server.start()
    yield server
    server.stop()


async def test_each_kv_process_sees_the_changes_made_through_the_others(
    server: TarantoolServer,
) -> None:
    async with opened(server) as one, opened(server) as other:
        feeds = [one.changes(), other.changes()]
        for feed in feeds:
            assert list(await anext(feed)) == []
        a, b = Key("feed/a"), Key("feed/b")
        await one.create(a, "1")
        await other.create(b, "2")
        await one.delete(b)
        expected = [Change(a, 1, "1"), Change(b, 1, "2"), Change(b, 1, None)]
        for feed in feeds:
            received: list[Change] = []
            async with asyncio.timeout(5):
                while len(received) < len(expected):
                    received += await anext(feed)
            assert received == expected
            await feed.aclose()


async def test_a_feed_that_falls_behind_the_ring_is_told_it_lost_changes(
    server: TarantoolServer,
) -> None:
    async with opened(server) as repository:
        feed = repository.changes()
        assert list(await anext(feed)) == []
        for i in range(RING + 1):  # one more than the ring keeps, while the feed does not read
            await repository.upsert(Key("behind"), str(i))
        with pytest.raises(ChangesLost):
            await asyncio.wait_for(anext(feed), 5)
        # A new feed starts afresh.
        again = repository.changes()
        assert list(await anext(again)) == []
        await repository.upsert(Key("behind"), "new")
        async with asyncio.timeout(5):
            assert await anext(again) == [Change(Key("behind"), RING + 2, "new")]
        await again.aclose()


async def test_a_feed_whose_tarantool_stops_raises_storage_unavailable(
    server: TarantoolServer,
) -> None:
    async with opened(server) as repository:
        feed = repository.changes()
        assert list(await anext(feed)) == []
        waiting = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.1)  # the poll is in Tarantool
        server.kill()
        with pytest.raises(StorageUnavailable) as lost:
            async with asyncio.timeout(5):
                await waiting
        assert lost.value.failure is Failure.UNREACHABLE
        with pytest.raises(StopAsyncIteration):
            await anext(feed)
        server.start()


async def test_a_clear_publishes_a_delete_per_key(server: TarantoolServer) -> None:
    async with opened(server) as repository:
        keys = [Key(f"clear/{i}") for i in range(3)]
        for key in keys:
            await repository.create(key, "1")
        await repository.replace(keys[1], "2")
        feed = repository.changes()
        assert list(await anext(feed)) == []
        await repository.clear()
        received: list[Change] = []
        async with asyncio.timeout(5):
            while len(received) < len(keys):
                received += await anext(feed)
        assert received == [
            Change(keys[0], 1, None),
            Change(keys[1], 2, None),
            Change(keys[2], 1, None),
        ]
        await feed.aclose()
