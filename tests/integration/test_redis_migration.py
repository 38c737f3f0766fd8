"""A Redis written by a kv without listing: its records get their index entries at start-up.

The earlier kv stored `<prefix><key>` = `<revision>:<value>` and nothing else. A listing must
never leave such records out silently: the adapter indexes them in the background (listing
waits for it, within the timeout, else 503), resumes where it stopped after a restart, and
marks the store as indexed when done.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from kv.adapters.redis import RedisRepository, upkeep
from kv.adapters.redis.upkeep import Upkeep
from kv.container import Settings, build_container, start_service, stop_service
from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Entry, Key, Record
from tests.servers.redis import RedisClusterServer, RedisServer

RECORDS = 2500


@asynccontextmanager
async def repository_on(server_settings: dict[str, Any], prefix: str) -> AsyncIterator[Any]:
    container = build_container(
        Settings(**server_settings, redis_prefix=prefix, backend_timeout=0.5, metrics=False)
    )
    repository = (await start_service(container)).repository
    assert isinstance(repository, RedisRepository)
    try:
        yield repository
    finally:
        await stop_service(container)


def write_old_records(client: "redis.Redis | redis.RedisCluster", prefix: str) -> dict[str, str]:
    """What the earlier kv left: one string per record, no index."""
    records = {f"r/{i:05d}": f'{{"i":{i}}}' for i in range(RECORDS)}
    for key, value in records.items():
        client.set(prefix + key, f"{1 + len(key) % 3}:{value}")
    return records


async def list_all(repository: RedisRepository, prefix: str = "") -> list[Entry]:
    entries: list[Entry] = []
    after: str | None = None
    while True:
        page = await repository.list(prefix, after=after, limit=1000, values=True)
        entries += page.entries
        if not page.more:
            return entries
        after = page.entries[-1].key


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many SCAN steps each reindex took (small ones, so that there are many)."""
    monkeypatch.setattr(upkeep, "SCAN_BATCH", 100)
    counted: list[int] = []
    scan = Upkeep._scan

    async def counting(self: Upkeep, node: Any, cursor: int) -> tuple[int, list[str]]:
        counted.append(cursor)
        return await scan(self, node, cursor)

    monkeypatch.setattr(Upkeep, "_scan", counting)
    return counted


@pytest.mark.parametrize("server", ["redis_server", "redis_cluster_server"])
async def test_records_of_an_earlier_kv_are_listed_after_start_up(
    server: str, request: pytest.FixtureRequest, scans: list[int]
) -> None:
    live: RedisServer | RedisClusterServer = request.getfixturevalue(server)
    prefix = f"old{uuid.uuid4().hex[:8]}:"
    client = raw_client(live)
    try:
        records = write_old_records(client, prefix)
        async with repository_on(live.settings(), prefix) as repository:
            entries = await list_all(repository)
            assert [entry.key for entry in entries] == sorted(records)
            assert all(entry.value == records[entry.key] for entry in entries)
            assert entries[0] == Entry("r/00000", 1 + len("r/00000") % 3, None, '{"i":0}')
            # The old records are ordinary ones: revisions go on, deletes unlist them.
            key = Key("r/00001")
            assert await repository.replace(key, "2", if_revision=2) == Record(key, "2", 3)
            assert await repository.delete(Key("r/00002")) == 2
            assert len(await list_all(repository, "r/0000")) == 9
        assert client.get(prefix + "format/") == "2"  # done: the next start does nothing
        assert not client.exists(prefix + "reindexing/")
        scans.clear()
        async with repository_on(live.settings(), prefix) as repository:
            assert len(await list_all(repository)) == RECORDS - 1
        assert scans == []
    finally:
        clear(client, prefix)


async def test_an_interrupted_reindex_resumes_where_it_stopped(
    redis_server: RedisServer, scans: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"old{uuid.uuid4().hex[:8]}:"
    client = raw_client(redis_server)
    try:
        write_old_records(client, prefix)
        scan = Upkeep._scan

        async def failing(self: Upkeep, node: Any, cursor: int) -> tuple[int, list[str]]:
            if len(scans) >= 5:  # Redis goes away after five steps
                raise StorageUnavailable("redis", Failure.UNREACHABLE)
            return await scan(self, node, cursor)

        monkeypatch.setattr(Upkeep, "_scan", failing)
        async with repository_on(redis_server.settings(), prefix) as repository:
            with pytest.raises(StorageUnavailable) as waited:
                await repository.list("", after=None, limit=10, values=False)
            assert waited.value.failure is Failure.REFUSED  # never a short listing
        saved = client.hget(prefix + "reindexing/", "")
        assert saved is not None and saved not in ("0", "done")
        assert not client.exists(prefix + "format/")

        monkeypatch.setattr(Upkeep, "_scan", scan)
        first_run = list(scans)
        scans.clear()
        async with repository_on(redis_server.settings(), prefix) as repository:
            assert len(await list_all(repository)) == RECORDS
        assert scans[0] == int(saved)  # it went on from there
        assert len(first_run) + len(scans) < 2 * len(scans)
    finally:
        clear(client, prefix)


def raw_client(server: RedisServer | RedisClusterServer) -> "redis.Redis | redis.RedisCluster":
    if isinstance(server, RedisServer):
        return server.client()
    return redis.RedisCluster(
        host="127.0.0.1", port=server.nodes[0].port, decode_responses=True, socket_timeout=5
    )


def clear(client: "redis.Redis | redis.RedisCluster", prefix: str) -> None:
    for name in list(client.scan_iter(match=prefix + "*", count=1000)):
        client.delete(name)
    client.close()
