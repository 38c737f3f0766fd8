"""The Redis backend, standalone or Cluster, over `redis.asyncio`.

- layout.py: where records, kv's entries (index, expiry) and the change channel live;
- scripts.py: the Lua scripts, one atomic step each (write_scripts.py, scan_scripts.py);
- repository.py: the port's operations on top of them;
- calls.py: how a call reaches Redis (pipeline.py on a standalone server), within the timeout;
- deadline.py: a timeout that measures Redis, not kv's own event loop;
- feed.py: the change feed's subscription; upkeep.py: the sweeper, clear and reindex;
- compat.py: the redis-py members kv drives directly, checked when the adapter opens.

Reconnecting: the standalone pool replaces a connection the server closed when it next hands
it out, so the first request after Redis returns succeeds. redis-py 8.1 skips that check while
"maintenance notifications" are on (their default is "auto"), so they are turned off here; kv
does not use them. The cluster client does not check idle connections: after a node restarts,
the writes already on their way over its old connections get 503, and the client then drops
that node's idle connections and reloads the cluster layout.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kv.adapters.redis.compat import check_redis_py, maint_notifications_off
from kv.adapters.redis.repository import RedisRepository

__all__ = ["RedisRepository", "open_redis_repository"]


async def open_redis_repository(
    url: str,
    prefix: str,
    cluster: bool,
    timeout: float,  # noqa: ASYNC109 (bounds each Redis call the client makes, not this one)
    *,
    max_connections: int = 1000,
    publish: bool = True,
) -> AsyncIterator[RedisRepository]:
    """The Resource the container starts: the clients for `url`, the expiry sweeper, all
    closed on the way out.

    Every call as a whole is bounded by `timeout` (a call may connect, authenticate and, on
    NOSCRIPT, load a script: several socket operations), and so is every socket operation
    redis-py does on its own, but for the pipeliner's replies, which its batch's deadline
    bounds (see pipeline.py). `max_connections`: per Cluster node, as many as kv serves
    requests at once (KV_LIMIT_CONCURRENCY). `publish` False only to measure what publishing
    changes costs (bench/redis_features.py): nobody could watch.
    """
    check_redis_py()
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "maint_notifications_config": maint_notifications_off(),
    }
    pipeline_client: Redis | None = None
    if cluster:
        # One connection per call in flight to a node (the Cluster client does not pipeline):
        # redis-py's default of 100 per node failed the 101st concurrent call at once.
        client: Redis | RedisCluster = RedisCluster.from_url(
            url, max_connections=max_connections, **options
        )
    else:
        client = Redis.from_url(url, **options)
        pipeline_client = Redis.from_url(url, **{**options, "socket_timeout": None})

    async def feed_client(node: ClusterNode | None) -> Redis:
        """A client of its own for a change feed to `node` (None: the standalone server), on
        one connection, replies left as bytes."""
        connection_class: Any
        if node is not None:
            connection_class, kwargs = node.connection_class, node.connection_kwargs
        else:
            assert isinstance(client, Redis)
            own = client.connection_pool
            connection_class, kwargs = own.connection_class, own.connection_kwargs
        pool = ConnectionPool(
            connection_class=connection_class,
            max_connections=1,
            # No socket timeout: a timer per reply made reading 16,384 subscription replies
            # ten times slower; the feed bounds every wait itself (see feed.py).
            **{**kwargs, "decode_responses": False, "socket_timeout": None},
        )
        return Redis.from_pool(pool)

    repository = RedisRepository(
        client,
        prefix=prefix,
        timeout=timeout,
        pipeline_client=pipeline_client,
        feed_client=feed_client,
        publish=publish,
    )
    sweeper: asyncio.Task[None] | None = None
    try:
        await repository.prepare()
        sweeper = asyncio.get_running_loop().create_task(repository.upkeep.sweep_forever())
        yield repository
    finally:
        try:
            await repository.upkeep.stop(*([sweeper] if sweeper is not None else []))
            await repository.aclose()
        finally:
            await client.aclose()
            if pipeline_client is not None:
                await pipeline_client.aclose()
