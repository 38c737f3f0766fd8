"""What the Redis adapter keeps in Redis, and how it behaves there beyond the contract suite."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis

from kv.container import Settings, build_container
from kv.domain.model import Key, Record, Stale
from kv.domain.ports import Repository
from tests.servers.redis import RedisClusterServer, RedisServer


@asynccontextmanager
async def repository_on(server_settings: dict[str, Any], prefix: str) -> AsyncIterator[Repository]:
    container = build_container(Settings(**server_settings, redis_prefix=prefix, metrics=False))
    service = await container.service.async_()
    try:
        yield service.repository
    finally:
        closing = container.shutdown_resources()
        if closing is not None:
            await closing


def unique_prefix(shape: str = "kvtest:{}:") -> str:
    return shape.format(uuid.uuid4().hex[:8])


async def test_a_record_is_one_string_and_its_key_an_index_entry(
    redis_server: RedisServer,
) -> None:
    prefix = unique_prefix()
    value = '{"a":[1,"é",null]}'
    async with repository_on(redis_server.settings(), prefix) as repository:
        await repository.create(Key("config/db"), value)
        await repository.replace(Key("config/db"), value)
        await repository.list("", after=None, limit=1, values=False)  # reindex done
    with redis_server.client() as raw:
        assert sorted(raw.keys(prefix + "*")) == [
            prefix + "config/db",
            prefix + "format/",
            prefix + "index/",
        ]
        assert raw.type(prefix + "config/db") == "string"
        assert raw.get(prefix + "config/db") == "2:" + value
        assert raw.ttl(prefix + "config/db") == -1
        assert raw.zrange(prefix + "index/", 0, -1, withscores=True) == [("config/db", 0.0)]


async def test_a_record_that_expires_carries_its_time_and_has_entries_until_overwritten(
    redis_server: RedisServer,
) -> None:
    prefix = unique_prefix()
    async with repository_on(redis_server.settings(), prefix) as repository:
        created = await repository.create(Key("lease"), "1", ttl_ms=60_000)
        assert created is not None and created.expires_at is not None
        with redis_server.client() as raw:
            assert raw.get(prefix + "lease") == f"1,{created.expires_at}:1"
            # Redis drops it itself at expires_at (PXAT is exclusive: one ms before).
            assert raw.pexpiretime(prefix + "lease") == created.expires_at - 1
            assert raw.zscore(prefix + "expiry/", "lease") == created.expires_at
            assert raw.hget(prefix + "expiring/", "lease") == "1"  # the revision to announce
            await repository.replace(Key("lease"), "2")  # no ttl: the expiry goes
            assert raw.get(prefix + "lease") == "2:2"
            assert raw.ttl(prefix + "lease") == -1
            assert not raw.exists(prefix + "expiry/", prefix + "expiring/")


async def test_clear_deletes_only_keys_under_the_prefix(redis_server: RedisServer) -> None:
    # Glob characters in the prefix must match literally, not as a pattern.
    prefix = unique_prefix("kv[{}]*?:")
    lookalike = prefix.replace("[", "").replace("]", "").replace("*?", "x") + "k"
    with redis_server.client() as raw:
        raw.set(lookalike, "someone else's")
        raw.set("elsewhere:k", "someone else's")
        async with repository_on(redis_server.settings(), prefix) as repository:
            for i in range(2500):  # more than one SCAN batch
                await repository.upsert(Key(f"k{i}"), "1")
            owned = [key for key in raw.scan_iter(count=1000) if key.startswith(prefix)]
            assert len([key for key in owned if not key.endswith("/")]) == 2500
            await repository.clear()
            assert await repository.get(Key("k0")) is None
        owned = [key for key in raw.scan_iter(count=1000) if key.startswith(prefix)]
        assert owned == [prefix + "format/"]  # "every record is indexed" stays true
        assert raw.get(lookalike) == "someone else's"
        assert raw.get("elsewhere:k") == "someone else's"
        raw.delete(lookalike, "elsewhere:k")


async def test_scripts_are_loaded_again_after_the_server_forgets_them(
    redis_server: RedisServer,
) -> None:
    async with repository_on(redis_server.settings(), unique_prefix()) as repository:
        await repository.create(Key("k"), "1")
        with redis_server.client() as raw:
            raw.script_flush()  # what a restarted or new server looks like
            assert await repository.replace(Key("k"), "2", if_revision=1) == Record("k", "2", 2)
            raw.script_flush()
            assert await repository.upsert(Key("k"), "3") == Record("k", "3", 3)
            raw.script_flush()
            assert await repository.delete(Key("k"), if_revision=1) == Stale(3)
            raw.script_flush()
            assert await repository.delete(Key("k"), if_revision=3) == 3


async def test_revisions_compare_exactly_beyond_float_precision(
    redis_server: RedisServer,
) -> None:
    async with repository_on(redis_server.settings(), unique_prefix()) as repository:
        await repository.create(Key("k"), "1")
        huge = 2**63 + 1  # a client may send any If-Match; it must not collide with 1 as a float
        assert await repository.replace(Key("k"), "2", if_revision=huge) == Stale(1)
        assert await repository.delete(Key("k"), if_revision=huge) == Stale(1)


async def test_cluster_spreads_keys_over_its_masters(
    redis_cluster_server: RedisClusterServer,
) -> None:
    prefix = unique_prefix()
    async with repository_on(redis_cluster_server.settings(), prefix) as repository:
        for i in range(60):
            assert await repository.create(Key(f"k{i}"), str(i)) == Record(f"k{i}", str(i), 1)
        per_node = [len(keys_on(node.port, prefix)) for node in redis_cluster_server.nodes]
        assert sum(per_node) == 60
        assert sum(1 for count in per_node if count > 0) >= 2, per_node
        await repository.clear()
        assert [keys_on(node.port, prefix) for node in redis_cluster_server.nodes] == [[]] * 3
    for node in redis_cluster_server.nodes:  # nor any entry of kv's but the index's marker
        with redis.Redis(port=node.port) as raw:
            left = [
                n for n in raw.scan_iter(match=prefix + "*") if n != (prefix + "format/").encode()
            ]
            assert left == []


def keys_on(port: int, prefix: str) -> list[bytes]:
    """The records under `prefix` that the one Redis node on `port` holds (not kv's entries,
    whose names end with '/')."""
    with redis.Redis(port=port) as node:
        names = node.scan_iter(match=prefix + "*", count=1000)
        return [name for name in names if not name.endswith(b"/")]
