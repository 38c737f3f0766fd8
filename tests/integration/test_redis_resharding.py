"""Redis Cluster resharding under kv: slots move between masters with their records and
kv's entries (one group per slot), and nothing kv promises breaks meanwhile or after.

While `redis-cli --cluster reshard` moves a third of the slots, a listing is either complete
or a 503 (never silently short); afterwards listing, writes, transactions and expiry events
work on the moved keys.
"""

import asyncio
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import pytest
import redis
from redis.crc import key_slot

from kv.adapters.redis import RedisRepository
from kv.container import Settings, build_container, start_service, stop_service
from kv.domain import txn
from kv.domain.errors import ChangesLost, StorageUnavailable
from kv.domain.model import Change, Key, Record
from tests.servers.redis import RedisClusterServer, executable

pytestmark = pytest.mark.slow

KEYS = [Key(f"k/{i:04d}") for i in range(600)]
EXPIRING = [Key(f"x/{i:03d}") for i in range(30)]


@pytest.fixture
async def repository(
    disposable_redis_cluster_server: RedisClusterServer,
) -> AsyncIterator[RedisRepository]:
    container = build_container(
        Settings(**disposable_redis_cluster_server.settings(), metrics=False)
    )
    repository = (await start_service(container)).repository
    assert isinstance(repository, RedisRepository)
    yield repository
    await stop_service(container)


async def every_key(repository: RedisRepository, prefix: str) -> list[str]:
    keys: list[str] = []
    after: str | None = None
    while True:
        page = await repository.list(prefix, after=after, limit=97, values=False)
        keys += [entry.key for entry in page.entries]
        if not page.more:
            return keys
        after = page.entries[-1].key


async def drain(changes: AsyncGenerator[Sequence[Change], None]) -> None:
    """Read a feed until it ends."""
    async with asyncio.timeout(15):
        while True:
            await anext(changes)


def node_id(port: int) -> str:
    with redis.Redis(port=port, decode_responses=True) as client:
        return str(client.execute_command("CLUSTER", "MYID"))


def reshard(cluster: RedisClusterServer, slots: int) -> None:
    """Move `slots` slots (with their keys) from the first master to the second."""
    source, target = cluster.nodes[0].port, cluster.nodes[1].port
    subprocess.run(
        [
            executable("redis-cli"),
            "--cluster", "reshard", f"127.0.0.1:{source}",
            "--cluster-from", node_id(source),
            "--cluster-to", node_id(target),
            "--cluster-slots", str(slots),
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    cluster.wait_ok()


async def test_listing_writes_and_expiry_hold_through_a_reshard(
    repository: RedisRepository, disposable_redis_cluster_server: RedisClusterServer
) -> None:
    cluster = disposable_redis_cluster_server
    for key in KEYS:
        await repository.create(key, '"v"')
    changes = repository.changes()
    assert list(await anext(changes)) == []
    for key in EXPIRING:
        await repository.create(key, '"x"', ttl_ms=3000)  # expires while slots move

    listings: list[list[str] | None] = []
    stop = asyncio.Event()

    async def list_meanwhile() -> None:
        while not stop.is_set():
            try:
                listings.append(await every_key(repository, "k/"))
            except StorageUnavailable:
                listings.append(None)  # a 503: allowed while slots move, a short list is not

    lister = asyncio.create_task(list_meanwhile())
    try:
        await asyncio.to_thread(reshard, cluster, 2000)
    finally:
        stop.set()
        await lister
    assert listings, "no listing ran during the reshard"
    assert all(listing in (None, KEYS) for listing in listings)

    moved = [key for key in KEYS if cluster.node_of(f"kv:{key}") is cluster.nodes[1]]
    assert await every_key(repository, "k/") == KEYS
    assert await repository.replace(moved[0], '"w"') == Record(moved[0], '"w"', 2)
    # A transaction in a moved slot (the first master had slots 0-5460).
    tag = next(f"t{i}" for i in range(10_000) if key_slot(f"t{i}".encode()) < 2000)
    a, b = Key("{" + tag + "}/a"), Key("{" + tag + "}/b")
    assert cluster.node_of(f"kv:{a}") is cluster.nodes[1]
    assert await repository.transact([txn.Create(a, "1"), txn.Create(b, "2")]) == [
        Record(a, "1", 1),
        Record(b, "2", 1),
    ]
    assert await repository.transact([txn.Put(a, "3", 1)]) == [Record(a, "3", 2)]

    # The feed that was open lost its moved slots' channels: it ended, so its watchers list
    # again.
    with pytest.raises(ChangesLost):
        await drain(changes)
    # What expired meanwhile is gone, entries included, wherever its slot went.
    deadline = time.monotonic() + 15
    while left := entries_of(cluster, "x/"):
        assert time.monotonic() < deadline, f"still stored: {left}"
        await asyncio.sleep(0.5)
    # A new feed (the next watcher's) hears expiries in moved slots.
    changes = repository.changes()
    assert list(await anext(changes)) == []
    again = [Key(f"x/{i:03d}") for i in range(200) if moved_slot(cluster, Key(f"x/{i:03d}"))][:5]
    for key in again:
        await repository.create(key, '"x"', ttl_ms=300)
    expired: list[Change] = []
    async with asyncio.timeout(15):
        while len(expired) < len(again):
            expired += [change for change in await anext(changes) if change.expired]
    assert sorted(change.key for change in expired) == again
    await changes.aclose()


def moved_slot(cluster: RedisClusterServer, key: Key) -> bool:
    """Whether `key` is in a slot the reshard moved (the first master had 0-5460)."""
    return (
        key_slot(f"kv:{key}".encode()) <= 5460 and cluster.node_of(f"kv:{key}") is cluster.nodes[1]
    )


def entries_of(cluster: RedisClusterServer, prefix: str) -> list[str]:
    """The records and kv's entries under the key prefix, on every master."""
    found: list[str] = []
    for node in cluster.nodes:
        with redis.Redis(port=node.port, decode_responses=True) as raw:
            for name in raw.scan_iter(match="kv:*", count=1000):
                if name.endswith(("index/", "expiry/")):
                    found += [m for m in raw.zrange(name, 0, -1) if m.startswith(prefix)]
                elif name.endswith("expiring/"):
                    found += [m for m in raw.hkeys(name) if m.startswith(prefix)]
                elif name.startswith("kv:" + prefix):
                    found.append(name)
    return found
