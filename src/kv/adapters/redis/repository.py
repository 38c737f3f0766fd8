"""The Redis backend, standalone or Cluster, over `redis.asyncio`.

Layout: one Redis string per record, at `<prefix><key>`, holding `<revision>:<value>`
(`kv:config/db` -> `3:{"host":"db1"}`). Value and revision sit in one string so they change
together, a read is one GET that returns both, and create is a plain `SET ... NX`. The other
writes are Lua scripts that read only the revision at the head of the string (GETRANGE, so a
1 MB value is not copied to learn its revision) and touch exactly one key, so they run on
whichever cluster node owns that key.

No retries of writes: redis-py retries a failed command by default (10 times, with backoff),
which would break the time bound and re-send writes that may already have been applied: a
retried create would report its own write as "exists", a retried upsert would count twice. A
failure is StorageUnavailable (503), and for a write its outcome is unknown. Reads are sent a
second time after a connection error, as they change nothing.

Reconnecting: the standalone pool replaces a connection the server closed when it next hands
it out, so the first request after Redis returns succeeds. redis-py 8.1 skips that check while
"maintenance notifications" are on (their default is "auto"), so they are turned off here; kv
does not use them. The cluster client does not check idle connections: after a node restarts,
the writes already on their way over its old connections get 503, and the client then drops
that node's idle connections and reloads the cluster layout.

The cluster keeps one round trip per command. Its pipeline would cut the adapter's CPU per
call about fourfold (measured: ~96 us per call one by one, ~24 us in ClusterPipeline batches of
50), but on a connection error it only hands the error back: it does not reset that node's
connections, move the node last or reload the layout, as the per-command path does and as the
recovery described above relies on. Doing that here would mean driving redis-py internals.
"""

import asyncio
from collections.abc import Awaitable
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError

from kv.adapters.redis.deadline import RedisDeadline
from kv.adapters.redis.errors import FAILURES, unavailable
from kv.adapters.redis.pipeline import Command, Pipeliner
from kv.domain.model import Record, Stale

# Every script answers with an integer: the new (or last) revision on success, minus the current
# revision when it differs from the expected one (ARGV's '' means "any"), nil when the key is
# absent. Revisions are compared as text so that any expected revision a client sends, however
# large, is compared exactly rather than as a Lua float.
_HEAD = """
local head = redis.call('GETRANGE', KEYS[1], 0, 20)
"""
_CURRENT = """
local current = string.sub(head, 1, string.find(head, ':', 1, true) - 1)
"""

REPLACE_SCRIPT = f"""-- kv replace: KEYS[1] record, ARGV[1] value, ARGV[2] expected revision or ''
{_HEAD}
if head == '' then return false end
{_CURRENT}
if ARGV[2] ~= '' and ARGV[2] ~= current then return -tonumber(current) end
local revision = tonumber(current) + 1
redis.call('SET', KEYS[1], string.format('%d:', revision) .. ARGV[1])
return revision
"""

UPSERT_SCRIPT = f"""-- kv upsert: KEYS[1] record, ARGV[1] value
{_HEAD}
local revision = 1
if head ~= '' then
{_CURRENT}
  revision = tonumber(current) + 1
end
redis.call('SET', KEYS[1], string.format('%d:', revision) .. ARGV[1])
return revision
"""

DELETE_SCRIPT = f"""-- kv delete: KEYS[1] record, ARGV[1] expected revision or ''
{_HEAD}
if head == '' then return false end
{_CURRENT}
if ARGV[1] ~= '' and ARGV[1] ~= current then return -tonumber(current) end
redis.call('DEL', KEYS[1])
return tonumber(current)
"""

SCAN_BATCH = 1000


class RedisRepository:
    def __init__(
        self,
        client: "Redis | RedisCluster",
        *,
        prefix: str,
        timeout: float,
        pipeline_client: Redis | None = None,
    ) -> None:
        """`pipeline_client`: the standalone pipeliner's own client (its pool without a socket
        timeout, see pipeline.py)."""
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._prefix = prefix
        self._timeout = timeout
        self._execute = client.execute_command
        # Each Script runs by EVALSHA and, on NOSCRIPT (a restarted or new node), loads itself
        # again and re-runs: safe, as a NOSCRIPT reply means the script did not run.
        self._replace = client.register_script(REPLACE_SCRIPT)
        self._upsert = client.register_script(UPSERT_SCRIPT)
        self._delete = client.register_script(DELETE_SCRIPT)
        self._match = _glob_escape(prefix) + "*"
        self._pipeliner = None
        if pipeline_client is not None:
            sources = {REPLACE_SCRIPT: self._replace, UPSERT_SCRIPT: self._upsert}
            sources[DELETE_SCRIPT] = self._delete
            scripts = {script.sha: source for source, script in sources.items()}
            self._pipeliner = Pipeliner(pipeline_client, scripts=scripts, timeout=timeout)

    async def get(self, key: str) -> Record | None:
        stored: str | None = await self._command(key, "GET", self._prefix + key, write=False)
        if stored is None:
            return None
        revision, _, value = stored.partition(":")
        return Record(key, value, int(revision))

    async def create(self, key: str, value: str) -> Record | None:
        created = await self._command(
            key, "SET", self._prefix + key, "1:" + value, "NX", write=True
        )
        return Record(key, value, 1) if created else None

    async def replace(
        self, key: str, value: str, *, expected_revision: int | None = None
    ) -> Record | Stale | None:
        expected = "" if expected_revision is None else str(expected_revision)
        revision: int | None = await self._script(key, self._replace, value, expected)
        if revision is None:
            return None
        if revision < 0:
            return Stale(-revision)
        return Record(key, value, revision)

    async def upsert(self, key: str, value: str) -> Record:
        revision: int = await self._script(key, self._upsert, value)
        return Record(key, value, revision)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | Stale | None:
        expected = "" if expected_revision is None else str(expected_revision)
        revision: int | None = await self._script(key, self._delete, expected)
        if revision is not None and revision < 0:
            return Stale(-revision)
        return revision

    def _command(self, key: str, *args: str, write: bool) -> Awaitable[Any]:
        """One command on `key`: pipelined on a standalone Redis, on its own on a cluster."""
        if self._pipeliner is not None:
            return self._pipeliner.send(key, args, write=write)
        return self._call(key, self._execute(*args) if write else self._read(*args), write=write)

    def _script(self, key: str, script: AsyncScript, *args: str) -> Awaitable[Any]:
        """One run of a write script on `key` (see `_command`)."""
        if self._pipeliner is not None:
            command: Command = ("EVALSHA", script.sha, 1, self._prefix + key, *args)
            return self._pipeliner.send(key, command, write=True)
        return self._call(key, script((self._prefix + key,), args), write=True)

    async def clear(self) -> None:
        """Delete every key under the prefix, SCAN batch by SCAN batch, on every master.

        Each round trip has the time bound, not the whole clear, which may take long on a big
        store. Keys written while it runs may survive it.
        """
        if isinstance(self._client, RedisCluster):
            await self._call(None, self._client.initialize())
            for node in self._client.get_primaries():
                await self._clear_node(node)
        else:
            await self._clear_node(None)

    async def _clear_node(self, node: Any) -> None:
        cursor = 0
        options: dict[str, Any] = {} if node is None else {"target_nodes": node}
        while True:
            scan = self._read("SCAN", cursor, "MATCH", self._match, "COUNT", SCAN_BATCH, **options)
            cursor, keys = await self._call(None, scan, write=True)
            if node is not None:  # the cluster client answers {node name: cursor}
                cursor = cursor[node.name]
            if keys:
                await self._call(None, self._client.unlink(*keys), write=True)
            if cursor == 0:
                return

    async def ping(self) -> None:
        # On a cluster, ready means every master answers: a key on a silent one would get 503.
        options = {"target_nodes": RedisCluster.PRIMARIES} if self._cluster else {}
        await self._call(None, self._read("PING", **options))

    async def prepare(self) -> None:
        """Learn the cluster's layout and load the scripts before the first request.

        Best effort: a Redis that is down at start-up only delays this to the first calls,
        which do it themselves, so the service starts and answers 503 meanwhile.
        """
        try:
            async with asyncio.timeout(self._timeout):
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()
                for script in (REPLACE_SCRIPT, UPSERT_SCRIPT, DELETE_SCRIPT):
                    await self._client.script_load(script)
        except FAILURES as exc:
            logger.warning("Redis is not reachable yet ({}); requests get 503 until it is", exc)

    async def aclose(self) -> None:
        """Let the calls already made finish or fail (within the timeout); refuse new ones."""
        if self._pipeliner is not None:
            await self._pipeliner.aclose()

    async def _read(self, *args: Any, **options: Any) -> Any:
        """Run a command that changes nothing, once more if its connection turned out dead."""
        try:
            return await self._execute(*args, **options)
        except RedisConnectionError:
            return await self._execute(*args, **options)

    async def _call(self, key: str | None, command: Awaitable[Any], *, write: bool = False) -> Any:
        """Await one Redis call within the time bound; any failure is StorageUnavailable."""
        try:
            async with RedisDeadline(self._timeout):  # measures Redis, not kv's loop
                return await command
        except FAILURES as exc:
            raise unavailable(exc, key, write=write) from exc
        except Exception as exc:
            if not self._cluster:
                raise
            # When a node restarts under concurrent load, redis-py's cluster client can fail
            # from inside its connection handling with whatever the moment gives: uvloop's
            # RuntimeError for a write to a closed transport (`kv serve` runs uvloop; asyncio's
            # own loop raises nothing there), an AttributeError on a connection another task
            # has just torn down. tests/integration/test_faults_under_load.py met both as
            # 500s. From that client, any failure of a call means the call failed.
            raise unavailable(exc, key, write=write) from exc


def _glob_escape(text: str) -> str:
    """`text` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
