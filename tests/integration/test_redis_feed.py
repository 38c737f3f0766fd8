"""The Redis change feed beyond the contract suite: several kv processes, the Cluster's
masters, clear, expiry met by a write, a closed feed, and a Redis that goes away."""

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from kv.adapters.redis import RedisRepository, feed, upkeep
from kv.container import Settings, build_container, start_service, stop_service
from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Change, Key
from tests.servers.redis import RedisClusterServer, RedisServer

TIMEOUT = 0.5
WAIT = 5.0


@asynccontextmanager
async def repository_on(
    server_settings: dict[str, Any], prefix: str, *, backend_timeout: float = 2.0
) -> AsyncIterator[RedisRepository]:
    settings = Settings(**server_settings, redis_prefix=prefix, backend_timeout=backend_timeout)
    container = build_container(settings)
    repository = (await start_service(container)).repository
    assert isinstance(repository, RedisRepository)
    try:
        yield repository
    finally:
        await stop_service(container)


@asynccontextmanager
async def subscribed(
    repository: RedisRepository,
) -> AsyncIterator[AsyncGenerator[Sequence[Change], None]]:
    changes = repository.changes()
    async with asyncio.timeout(WAIT):
        assert list(await anext(changes)) == []
    try:
        yield changes
    finally:
        await changes.aclose()


async def take(changes: AsyncGenerator[Sequence[Change], None], count: int) -> list[Change]:
    taken: list[Change] = []
    async with asyncio.timeout(WAIT):
        while len(taken) < count:
            taken += await anext(changes)
    return taken


async def drain(changes: AsyncGenerator[Sequence[Change], None]) -> None:
    """Read the feed until it ends (within WAIT)."""
    async with asyncio.timeout(WAIT):
        while True:
            await anext(changes)


def unique_prefix() -> str:
    return f"kvfeed:{uuid.uuid4().hex[:8]}:"


@pytest.mark.parametrize("server", ["redis_server", "redis_cluster_server"])
async def test_a_write_through_one_process_reaches_the_feed_of_another(
    server: str, request: pytest.FixtureRequest
) -> None:
    live: RedisServer | RedisClusterServer = request.getfixturevalue(server)
    prefix = unique_prefix()
    keys = [Key(f"k{i}") for i in range(30)]  # on every master of a Cluster
    async with (
        repository_on(live.settings(), prefix) as writer,
        repository_on(live.settings(), prefix) as watcher,
        subscribed(watcher) as changes,
    ):
        for key in keys:
            await writer.create(key, '"v"')
            await writer.replace(key, '"w"')
        got = await take(changes, 60)
        for key in keys:
            assert [c for c in got if c.key == key] == [
                Change(key, 1, '"v"'),
                Change(key, 2, '"w"'),
            ]


async def test_clear_announces_every_record_it_deletes(redis_server: RedisServer) -> None:
    async with repository_on(redis_server.settings(), unique_prefix()) as repository:
        for i in range(5):
            await repository.create(Key(f"k{i}"), "1")
        await repository.replace(Key("k0"), "2")
        async with subscribed(repository) as changes:
            await repository.clear()
            got = await take(changes, 5)
        assert sorted(got) == [Change("k0", 2, None)] + [
            Change(f"k{i}", 1, None) for i in (1, 2, 3, 4)
        ]


async def test_an_expiry_met_by_a_write_is_announced_before_the_write(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis dropped the record at its time; no sweep came yet; a create of the key learns
    it from kv's entries and announces the expiry, with the old revision, first."""
    monkeypatch.setattr(upkeep, "SWEEP_SECONDS", 3600.0)
    async with repository_on(redis_server.settings(), unique_prefix()) as repository:
        key = Key("lease")
        await repository.create(key, "1", ttl_ms=100)
        await repository.replace(key, "2", ttl_ms=100)
        async with subscribed(repository) as changes:
            await asyncio.sleep(0.3)  # Redis's clock must pass the expiry
            created = await repository.create(key, "3")
            assert created is not None and created.revision == 1
            assert await take(changes, 2) == [
                Change(key, 2, None, expired=True),
                Change(key, 1, "3"),
            ]


async def test_closing_the_feed_unsubscribes_and_closes_its_connection(
    redis_server: RedisServer,
) -> None:
    prefix = unique_prefix()
    async with repository_on(redis_server.settings(), prefix) as repository:
        with redis_server.client() as raw:
            async with subscribed(repository):
                assert raw.pubsub_numsub(prefix + "changes/") == [(prefix + "changes/", 1)]
                feed = {c["id"] for c in raw.client_list() if "P" in c["flags"]}  # pub/sub ones
                assert len(feed) == 1
            deadline = time.monotonic() + WAIT  # Redis learns of the close in its own time
            while feed & {c["id"] for c in raw.client_list()}:
                assert time.monotonic() < deadline, "the feed's connection is still open"
                await asyncio.sleep(0.05)
            assert raw.pubsub_numsub(prefix + "changes/") == [(prefix + "changes/", 0)]


async def test_a_killed_redis_ends_the_feed(disposable_redis_server: RedisServer) -> None:
    server = disposable_redis_server
    async with (
        repository_on(server.settings(), unique_prefix(), backend_timeout=TIMEOUT) as repository,
        subscribed(repository) as changes,
    ):
        server.kill()
        with pytest.raises(StorageUnavailable) as ended:
            async with asyncio.timeout(WAIT):
                await anext(changes)
        assert ended.value.failure is Failure.UNREACHABLE


async def test_a_silent_redis_ends_the_feed_after_an_unanswered_ping(
    disposable_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "IDLE_SECONDS", 0.3)
    server = disposable_redis_server
    async with (
        repository_on(server.settings(), unique_prefix(), backend_timeout=TIMEOUT) as repository,
        subscribed(repository) as changes,
    ):
        server.pause()
        try:
            start = time.monotonic()
            with pytest.raises(StorageUnavailable) as ended:
                await drain(changes)
            assert ended.value.failure is Failure.TIMEOUT
            assert time.monotonic() - start < 0.3 + TIMEOUT + 0.5
        finally:
            server.resume()


async def test_a_feed_that_cannot_subscribe_fails_within_the_timeout(
    disposable_redis_server: RedisServer,
) -> None:
    server = disposable_redis_server
    async with repository_on(
        server.settings(), unique_prefix(), backend_timeout=TIMEOUT
    ) as repository:
        server.stop()
        start = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await anext(repository.changes())
        assert time.monotonic() - start < TIMEOUT + 0.5
