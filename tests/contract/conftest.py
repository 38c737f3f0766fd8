import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asynctnt
import pytest

from kv.adapters.tarantool import TarantoolAddress
from kv.container import Settings, build_container, start_service, stop_service
from kv.domain.ports import Repository

# Every backend runs the same suite; the memory adapter is trusted as a fake because it does.
BACKENDS = ["memory", "tarantool", "redis", "redis_cluster"]

Stored = Callable[[str], Awaitable[list[str]]]
"""What a backend physically stores under a key prefix, expired or not: every key that
still has a record, or an entry of kv's own (listing index, expiry index) in the backend,
sorted and without duplicates."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[Repository]:
    """The repository the container opens for `settings.backend` (so the wiring is tested too)."""
    container = build_container(settings)
    service = await start_service(container)
    yield service.repository
    await stop_service(container)


@pytest.fixture
def stored(backend: str, settings: Settings, repository: Repository) -> Stored:
    """Looks into the backend behind `repository`, under kv's feet (see `Stored`)."""
    if backend == "memory":

        async def in_memory(prefix: str) -> list[str]:
            keys = {key for key in repository._records if key.startswith(prefix)}  # type: ignore[attr-defined]
            keys |= {key for _, key in repository._expiry if key.startswith(prefix)}  # type: ignore[attr-defined]
            keys |= {key for key in repository._keys if key.startswith(prefix)}  # type: ignore[attr-defined]
            return sorted(keys)

        return in_memory
    if backend == "tarantool":
        return _tarantool_stored(settings)
    if backend in ("redis", "redis_cluster"):
        return redis_stored(settings)
    pytest.fail(f"no way to look into what {backend} stores")


def _tarantool_stored(settings: Settings) -> Stored:
    """Every key under a prefix that has a tuple in kv's spaces, expired or not: read on a
    connection of its own (as the kv user, who may read them), by primary index from the
    prefix."""
    address = TarantoolAddress.parse(settings.tarantool_url)
    space = settings.tarantool_space

    async def in_tarantool(prefix: str) -> list[str]:
        connection = asynctnt.Connection(
            host=address.host,
            port=address.port,
            username=address.user,
            password=address.password,
            connect_timeout=5.0,
            request_timeout=5.0,
            reconnect_timeout=0,
        )
        async with asyncio.timeout(5.0):
            await connection.connect()  # fetches the schema: the space by its name
        try:
            # The prefix's keys come first from it on; a test stores far fewer than this.
            found = [
                row[0]
                for name in (space, f"{space}_parts")  # the records, and long values' parts
                for row in await connection.select(name, (prefix,), iterator="GE", limit=10_000)
            ]
        finally:
            await connection.disconnect()
        return sorted({key for key in found if key.startswith(prefix)})

    return in_tarantool


def redis_stored(settings: Settings) -> Stored:
    """What Redis holds under the key prefix, read with a client of the test's own: every
    record (SCAN makes Redis drop one whose time has passed: Redis's own reclaiming) and every
    member of kv's index, expiry and expiring entries, on every master."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    entries = ("index/", "expiry/", "expiring/")

    async def in_redis(prefix: str) -> list[str]:
        base = settings.redis_prefix
        if settings.redis_cluster:
            client: Redis | RedisCluster = RedisCluster.from_url(
                settings.redis_url, decode_responses=True
            )
        else:
            client = Redis.from_url(settings.redis_url, decode_responses=True)
        keys: set[str] = set()
        async with client:
            names = [str(name) async for name in client.scan_iter(match=base + "*", count=1000)]
            for name in names:
                rest = name[len(base) :]
                if rest.startswith("{") and "}" in rest:
                    rest = rest.partition("}")[2]
                if rest in entries:
                    if await client.type(name) == "zset":
                        keys.update(map(str, await client.zrange(name, 0, -1)))
                    else:
                        keys.update(map(str, await client.hkeys(name)))
                elif not rest.endswith("/"):
                    keys.add(name[len(base) :])
        return sorted(key for key in keys if key.startswith(prefix))

    return in_redis
