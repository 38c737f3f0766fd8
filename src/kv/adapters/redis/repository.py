"""The Redis repository: the port's operations, each one command or one script.

A read is one GET of the record string (Redis drops an expired record by itself, so a GET never
returns one). Every write is one script (scripts.py) that checks, writes the record, keeps its
entries in step and publishes the change, atomically. A listing page is one script on a
standalone Redis (the index range and the records together: one consistent read) and one per
master on a Cluster, merged here by key. A transaction is one script over its keys, which on a
Cluster must share a slot.
"""

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from kv.adapters.redis import scripts
from kv.adapters.redis.calls import Calls
from kv.adapters.redis.errors import FAILURES
from kv.adapters.redis.feed import Subscription, feed
from kv.adapters.redis.layout import Layout, parse_record, slot_tags
from kv.adapters.redis.upkeep import Upkeep
from kv.domain import txn
from kv.domain.errors import ChangesLost, Failure, StorageUnavailable, TransactionSpansSlots
from kv.domain.model import Change, Entry, Key, Page, Record, Stale

# Listing while slots move: groups a master no longer has that are read one by one (more
# means the layout changed: it is read again), and the pause before a page is asked again.
MAX_STRAY_GROUPS = 16
MOVING_PAUSE = 0.05

FeedClient = Callable[[ClusterNode | None], Awaitable[Redis]]
"""Opens a client for a change feed to a master (None: the standalone server): a connection
of its own, replies left as bytes."""


class RedisRepository:
    def __init__(
        self,
        client: "Redis | RedisCluster",
        *,
        prefix: str,
        timeout: float,
        pipeline_client: Redis | None = None,
        feed_client: FeedClient | None = None,
        publish: bool = True,
    ) -> None:
        """`pipeline_client`: the standalone pipeliner's own client (its pool without a socket
        timeout); `feed_client`: opens the change feed's; `publish` False only to measure
        what publishing changes costs (nobody could watch)."""
        self._cluster = isinstance(client, RedisCluster)
        self._layout = Layout(prefix, cluster=self._cluster)
        tags = "".join(slot_tags()) if self._cluster else ""
        self._scripts = scripts.build(prefix, cluster=self._cluster, publish=publish, tags=tags)
        self._calls = Calls(
            client,
            layout=self._layout,
            scripts=self._scripts,
            timeout=timeout,
            pipeline_client=pipeline_client,
        )
        self._client = client
        self._timeout = timeout
        self._feed_client = feed_client
        self._upkeep = Upkeep(self._calls, self._scripts, self._layout)
        self._standalone = self._layout.structures("")

    @property
    def upkeep(self) -> Upkeep:
        return self._upkeep

    # --- single keys ------------------------------------------------------------------------

    async def get(self, key: Key) -> Record | None:
        stored = await self._calls.command(key, "GET", self._layout.record(key), write=False)
        return None if stored is None else parse_record(key, stored)

    async def create(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record | None:
        expires_at = await self._write(key, self._scripts.create, value, _optional(ttl_ms))
        return None if expires_at is None else Record(key, value, 1, expires_at or None)

    async def replace(
        self, key: Key, value: str, *, if_revision: int | None = None, ttl_ms: int | None = None
    ) -> Record | Stale | None:
        expected, ttl = _optional(if_revision), _optional(ttl_ms)
        answer = await self._write(key, self._scripts.replace, expected, value, ttl)
        if answer is None:
            return None
        if isinstance(answer, int):
            return Stale(-answer)
        revision, expires_at = answer
        return Record(key, value, revision, expires_at or None)

    async def upsert(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record:
        ttl = _optional(ttl_ms)
        revision, expires_at = await self._write(key, self._scripts.upsert, value, ttl)
        return Record(key, value, revision, expires_at or None)

    async def delete(self, key: Key, *, if_revision: int | None = None) -> int | Stale | None:
        revision: int | None = await self._write(key, self._scripts.delete, _optional(if_revision))
        if revision is not None and revision < 0:
            return Stale(-revision)
        return revision

    def _write(self, key: str, source: str, *args: str) -> Awaitable[Any]:
        record = self._layout.record(key)
        return self._calls.script(key, source, (*self._group_of(record), record), args)

    def _group_of(self, record: str) -> tuple[str, str, str]:
        if not self._cluster:
            return self._standalone
        return self._layout.structures(self._layout.tag_of(record))

    # --- listing and transactions -----------------------------------------------------------

    async def list(self, prefix: str, *, after: str | None, limit: int, values: bool) -> Page:
        await self._upkeep.indexed()
        # ZRANGE BYLEX bounds: from just after `after` (or the prefix itself) to just before
        # prefix + 0xFF, a byte no UTF-8 text contains, so every key with the prefix is below.
        low: str | bytes = "[" + prefix if prefix else "-"
        if after is not None and after >= prefix:
            low = "(" + after
        high: str | bytes = b"(" + prefix.encode() + b"\xff" if prefix else "+"
        args = (low, high, str(limit), "1" if values else "")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._timeout
        while True:
            pages = await self._pages(args, values=values)
            if pages is not None:
                merged = list(itertools.islice(heapq.merge(*pages, key=_key), limit + 1))
                return Page(merged[:limit], more=len(merged) > limit)
            # A slot is moving between masters (a reshard): a page cannot be read whole
            # now. Ask again shortly, with the layout read anew, within the timeout.
            self._calls.forget_groups()
            if loop.time() + MOVING_PAUSE > give_up:
                raise StorageUnavailable("redis", Failure.REFUSED)
            await asyncio.sleep(MOVING_PAUSE)

    async def _pages(
        self, args: tuple[str | bytes, ...], *, values: bool
    ) -> Sequence[Sequence[Entry]] | None:
        """Every master's page (each in key order), or None when a slot is moving.

        A group whose index a master does not have (a slot that moved away, or is moving) is
        read apart, through the Cluster's routing, which finds the node that has it now.
        """
        calls, source = self._calls, self._scripts.list
        answers = await asyncio.gather(
            *(
                calls.on_master(node, source, (*args, *self._layout.groups(slots)), write=False)
                for node, slots in await calls.groups()
            )
        )
        if any(answer[0] == 0 for answer in answers):
            return None
        stray = [tag for answer in answers for tag in answer[2 : 2 + answer[1]]]
        if len(stray) > MAX_STRAY_GROUPS:
            return None  # the layout changed more than a slot: read it again first
        apart = await asyncio.gather(
            *(
                calls.script(
                    None, source, self._layout.structures(tag)[:1], (*args, tag), write=False
                )
                for tag in stray
            )
        )
        if any(answer[0] == 0 or answer[1] for answer in apart):
            return None
        return [_entries(answer, values=values) for answer in [*answers, *apart]]

    async def transact(self, operations: Sequence[txn.Op]) -> Sequence[txn.Result] | txn.Abort:
        records = [self._layout.record(op.key) for op in operations]
        if self._cluster:
            slots = [self._client.keyslot(record) for record in records]  # type: ignore[union-attr]
            for index, slot in enumerate(slots):
                if slot != slots[0]:
                    raise TransactionSpansSlots(operations[index].key, index=index)
        args = [part for op in operations for part in _txn_args(op)]
        keys = (*self._group_of(records[0]), *records)
        answer = await self._calls.script(None, self._scripts.transact, keys, args)
        if answer[0] == 0:
            _, index, reason = answer
            return txn.Abort(index, txn.Failure(reason))
        return [_txn_result(op, result) for op, result in zip(operations, answer[1], strict=True)]

    # --- changes ----------------------------------------------------------------------------

    async def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        """One subscription per master (see feed.py)."""
        feed_client = self._feed_client
        if feed_client is None:
            raise StorageUnavailable("redis", Failure.REFUSED)
        layout, timeout = self._layout, self._timeout

        def opener(
            node: ClusterNode | None, slots: list[tuple[int, int]]
        ) -> Callable[[], Awaitable[Subscription]]:
            async def open_one() -> Subscription:
                client = await feed_client(node)
                channels = [layout.channel(tag) for tag in layout.tags(slots)]
                return Subscription(client, channels, sharded=self._cluster, timeout=timeout)

            return open_one

        try:
            groups = await self._calls.groups()
            async with contextlib.aclosing(
                feed([opener(node, slots) for node, slots in groups])
            ) as changes:
                async for batch in changes:
                    yield batch
        except (StorageUnavailable, ChangesLost):
            # A master went away or a slot moved: the next feed reads the layout again.
            self._calls.forget_groups()
            raise

    # --- the rest ---------------------------------------------------------------------------

    async def clear(self) -> None:
        """Delete every key under the prefix, and kv's entries (see Upkeep.clear)."""
        await self._upkeep.clear()

    async def ping(self) -> None:
        # On a cluster, ready means every master answers: a key on a silent one would get 503.
        options = {"target_nodes": RedisCluster.PRIMARIES} if self._cluster else {}
        await self._calls.call(None, self._calls.read("PING", **options))

    async def prepare(self) -> None:
        """Learn the cluster's layout and load the scripts before the first request, then make
        sure every record is indexed (in the background).

        Best effort: a Redis that is down at start-up only delays this to the first calls,
        which do it themselves, so the service starts and answers 503 meanwhile.
        """
        try:
            async with asyncio.timeout(self._timeout):
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()
                for source in self._calls.sources.values():
                    await self._client.script_load(source)
        except (*FAILURES, StorageUnavailable) as exc:
            logger.warning("Redis is not reachable yet ({}); requests get 503 until it is", exc)
        self._upkeep.start()

    async def aclose(self) -> None:
        """Let the calls already made finish or fail (within the timeout); refuse new ones."""
        await self._calls.aclose()


def _key(entry: Entry) -> str:
    return entry.key


def _optional(number: int | None) -> str:
    """An optional number (a ttl, an expected revision) as the scripts take it: '' for none."""
    return "" if number is None else str(number)


def _entries(answer: list[Any], *, values: bool) -> list[Entry]:
    """The entries of a page script's answer: [1, n, n tags, key, revision, expiry, value, ...]."""
    return [
        Entry(answer[i], answer[i + 1], answer[i + 2] or None, answer[i + 3] if values else None)
        for i in range(2 + answer[1], len(answer), 4)
    ]


def _txn_args(op: txn.Op) -> tuple[str, str, str, str]:
    """An operation as the transaction script takes it: kind, value, expected, ttl."""
    match op:
        case txn.Create(_, value, ttl_ms):
            return ("c", value, "", _optional(ttl_ms))
        case txn.Put(_, value, expected, ttl_ms):
            return ("p", value, _optional(expected), _optional(ttl_ms))
        case txn.Delete(_, expected):
            return ("d", "", _optional(expected), "")
        case txn.Get():
            return ("g", "", "", "")
        case txn.Check(_, revision):
            return ("k", "", _optional(revision), "")
    raise AssertionError(f"not an operation: {op!r}")


def _txn_result(op: txn.Op, result: Any) -> txn.Result:
    match op:
        case txn.Create(key, value) | txn.Put(key, value):
            revision, expires_at = result
            return Record(key, value, revision, expires_at or None)
        case txn.Get(key):
            if result is None:
                return None
            revision, expires_at, value = result
            return Record(key, value, revision, expires_at or None)
        case _:
            return result  # type: ignore[no-any-return]
