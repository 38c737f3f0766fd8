"""How kv's commands and scripts reach Redis: pipelined on a standalone server, one round trip
each on a Cluster; every call within the timeout, every failure a StorageUnavailable.

No retries of writes: redis-py retries a failed command by default (10 times, with backoff),
which would break the time bound and re-send writes that may already have been applied: a
retried create would report its own write as "exists", a retried upsert would count twice. A
failure is StorageUnavailable (503), and for a write its outcome is unknown. Reads are sent a
second time after a connection error, as they change nothing.

The cluster keeps one round trip per command. Its pipeline would cut the adapter's CPU per
call about fourfold (measured: ~96 us per call one by one, ~24 us in ClusterPipeline batches of
50), but on a connection error it only hands the error back: it does not reset that node's
connections, move the node last or reload the layout, as the per-command path does and as
recovery relies on. Doing that here would mean driving redis-py internals.

A script over several groups (listing, sweeping, clearing, reindexing) runs once per master,
over the groups of the slots that master owns (`groups`, from CLUSTER SLOTS): its keys are
not declared, as Redis Cluster refuses declared keys of several slots, so it is sent to the
node itself. When the layout changed under it (a slot moved: the script reports a key that is
not local), `forget_groups` makes the next call read the layout again.
"""

from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from kv.adapters.redis.deadline import RedisDeadline
from kv.adapters.redis.errors import FAILURES, unavailable
from kv.adapters.redis.layout import Layout
from kv.adapters.redis.pipeline import Command, Pipeliner
from kv.adapters.redis.scripts import Scripts
from kv.domain.errors import Failure, StorageUnavailable

Group = tuple[ClusterNode | None, list[tuple[int, int]]]
"""A master (None: the standalone server) and the (first, last) ranges of the slots it owns
(none on a standalone Redis): see Layout.tags and Layout.groups."""


class Calls:
    def __init__(
        self,
        client: "Redis | RedisCluster",
        *,
        layout: Layout,
        scripts: Scripts,
        timeout: float,
        pipeline_client: Redis | None = None,
    ) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.layout = layout
        self.timeout = timeout
        self.sources = scripts.sources()
        # By source: hashing a script of a few KB on every call cost ~5 us of CPU per write.
        self._shas = {source: sha for sha, source in self.sources.items()}
        self._execute = client.execute_command
        # Each Script runs by EVALSHA and, on NOSCRIPT (a restarted or new node), loads itself
        # again and re-runs: safe, as a NOSCRIPT reply means the script did not run.
        self._scripts: dict[str, AsyncScript] = {
            sha: client.register_script(source) for sha, source in self.sources.items()
        }
        self._pipeliner: Pipeliner | None = None
        if pipeline_client is not None:
            self._pipeliner = Pipeliner(pipeline_client, scripts=self.sources, timeout=timeout)
        self._groups: list[Group] | None = None

    # --- one key, one group ---------------------------------------------------------------

    def command(
        self, key: str | None, *args: str | bytes, write: bool, pipelined: bool = True
    ) -> Awaitable[Any]:
        """One command: pipelined on a standalone Redis (unless not `pipelined`: the
        background work keeps out of the requests' batches), on its own on a Cluster."""
        if self._pipeliner is not None and pipelined:
            return self._pipeliner.send(key, args, write=write)
        return self.call(key, self._execute(*args) if write else self.read(*args), write=write)

    def script(
        self,
        key: str | None,
        source: str,
        keys: Sequence[str],
        args: Sequence[str | bytes | int],
        *,
        write: bool = True,
        pipelined: bool = True,
    ) -> Awaitable[Any]:
        """One run of a script whose `keys` are all in one slot (see `command`)."""
        sha = self._shas[source]
        if self._pipeliner is not None and pipelined:
            command: Command = ("EVALSHA", sha, len(keys), *keys, *args)
            return self._pipeliner.send(key, command, write=write)
        return self.call(key, self._scripts[sha](keys, args), write=write)

    # --- several groups, one master at a time ------------------------------------------------

    async def groups(self) -> list[Group]:
        """Every master and the ranges of its slots (on a standalone Redis: itself)."""
        if not isinstance(self.client, RedisCluster):
            return [(None, [])]
        if self._groups is None:
            client = self.client
            slots = await self.call(None, client.cluster_slots(target_nodes=RedisCluster.RANDOM))
            ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
            for (first, last), owners in slots.items():
                host, port = owners["primary"][:2]
                ranges.setdefault((str(host), int(port)), []).append((first, last))
            groups: list[Group] = []
            for (host, port), owned in sorted(ranges.items()):
                node = client.get_node(host=host, port=port)
                if node is None:  # a node the client has not met yet: learn the layout
                    await self.call(None, client.initialize())
                    node = client.get_node(host=host, port=port)
                if node is None:
                    raise StorageUnavailable("redis", Failure.UNREACHABLE)
                groups.append((node, sorted(owned)))
            self._groups = groups
        return self._groups

    def forget_groups(self) -> None:
        self._groups = None

    def on_master(
        self,
        node: ClusterNode | None,
        source: str,
        args: Sequence[str | bytes],
        *,
        write: bool,
        pipelined: bool = True,
    ) -> Awaitable[Any]:
        """One run of a script over several groups on one master (declaring no keys)."""
        sha = self._shas[source]
        if self._pipeliner is not None and pipelined:
            return self._pipeliner.send(None, ("EVALSHA", sha, 0, *args), write=write)
        if node is None:
            return self.call(None, self._scripts[sha]((), args), write=write)
        return self._on_node(node, sha, args, write=write)

    async def _on_node(
        self, node: ClusterNode, sha: str, args: Sequence[Any], *, write: bool
    ) -> Any:
        try:
            return await self.call(None, self._evalsha_on(node, sha, args), write=write)
        except StorageUnavailable:
            self.forget_groups()  # the node may have left the cluster: ask again next time
            raise

    async def _evalsha_on(self, node: ClusterNode | None, sha: str, args: Sequence[Any]) -> Any:
        try:
            return await self._execute("EVALSHA", sha, 0, *args, target_nodes=node)
        except NoScriptError:  # the script did not run: load it on that node, run it again
            await self._execute("SCRIPT", "LOAD", self.sources[sha], target_nodes=node)
            return await self._execute("EVALSHA", sha, 0, *args, target_nodes=node)

    # --- bounds and errors ------------------------------------------------------------------

    async def read(self, *args: Any, **options: Any) -> Any:
        """Run a command that changes nothing, once more if its connection turned out dead."""
        try:
            return await self._execute(*args, **options)
        except RedisConnectionError:
            return await self._execute(*args, **options)

    async def call(self, key: str | None, command: Awaitable[Any], *, write: bool = False) -> Any:
        """Await one Redis call within the time bound; any failure is StorageUnavailable."""
        try:
            async with RedisDeadline(self.timeout):
                return await command
        except FAILURES as exc:
            raise unavailable(exc, key, write=write) from exc
        except Exception as exc:
            if not self.cluster:
                raise
            # When a node restarts under concurrent load, redis-py's cluster client can fail
            # from inside its connection handling with whatever the moment gives: uvloop's
            # RuntimeError for a write to a closed transport (`kv serve` runs uvloop; asyncio's
            # own loop raises nothing there), an AttributeError on a connection another task
            # has just torn down. tests/integration/test_faults_under_load.py met both as
            # 500s. From that client, any failure of a call means the call failed.
            raise unavailable(exc, key, write=write) from exc

    async def aclose(self) -> None:
        """Let the calls already made finish or fail (within the timeout); refuse new ones."""
        if self._pipeliner is not None:
            await self._pipeliner.aclose()
