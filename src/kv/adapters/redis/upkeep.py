"""What keeps kv's entries in step with the records: the sweeper, clear, and the reindex of a
store written by a kv that kept no index.

Sweeper. Redis drops a record by itself once it expires (it is stored with PXAT), but its
entries, which hold the revision an expiry event needs, wait for kv: every kv process runs
`sweep` every SWEEP_SECONDS, a script that takes the due keys from the expiry entries, removes
what is left of each and announces its expiry; an expiry is thus announced within about
SWEEP_SECONDS (plus the time to sweep what is due) of `expires_at`, or sooner when a write or
a listing meets the key first. On a Cluster a sweep must look at each slot's expiry entries
(~5 us a slot, 25-40 ms for a master's 5,461: all that time the master serves nobody else),
so the processes take turns (the one that sets the lock `<prefix>sweeping/`, expiring before
the next round, sweeps that round), and a round, every CLUSTER_SWEEP_SECONDS, looks at one
CLUSTER_SWEEP_PARTS-th of every master's slots (which part: from the clock, so that every
process agrees): a master is held ~4 ms at a time, ~8 ms a second, and an expiry is announced
within about CLUSTER_SWEEP_SECONDS x CLUSTER_SWEEP_PARTS (4 s). With no kv process running,
Redis still drops the records at their time; their entries wait for the next kv's sweeps.

Reindex. Records written by a kv without listing have no index entry, and a listing must
never silently leave them out. So at start-up a process that does not find the marker
`<prefix>format/` walks every master's keys with SCAN, a batch at a time (each batch one
bounded call), indexes the records of each batch in one script, and saves its SCAN cursor
per master in `<prefix>reindexing/`, so that a restart resumes there; when every master is
done it sets the marker. Several processes doing it at once only repeat work: indexing is
idempotent and each saved cursor has everything before it done. Meanwhile listing waits for it
(within the timeout, then 503); every other operation works at once, and writes keep the
index themselves. Progress is logged. Stop every kv of the earlier version first: records it
writes after the marker is set are not indexed.
"""

import asyncio
import contextlib
import time
import uuid
from typing import Any

from loguru import logger
from redis.asyncio.cluster import ClusterNode

from kv.adapters.redis.calls import Calls
from kv.adapters.redis.layout import STRUCTURES, Layout
from kv.adapters.redis.scripts import Scripts
from kv.domain.errors import Failure, StorageUnavailable

SWEEP_SECONDS = 1.0
CLUSTER_SWEEP_SECONDS = 0.5
CLUSTER_SWEEP_PARTS = 8
SWEEP_BATCH = 1000
SCAN_BATCH = 1000
INDEX_FORMAT = "2"  # the marker's value: every record has its index entry
RETRY_SECONDS = 1.0  # between attempts to reindex while Redis cannot be reached


class Upkeep:
    def __init__(self, calls: Calls, scripts: Scripts, layout: Layout) -> None:
        self._calls = calls
        self._scripts = scripts
        self._layout = layout
        self._match = _glob_escape(layout.prefix) + "*"
        self._token = uuid.uuid4().hex
        self._indexed = asyncio.Event()
        self._indexing: asyncio.Task[None] | None = None
        # The background loops end when this is set, not only when cancelled: redis-py (8.1,
        # on Python 3.11) can lose a cancellation that arrives while it takes a connection
        # from its pool, and the call then returns as if nothing happened.
        self._closing = asyncio.Event()

    # --- the index of an earlier kv's records ------------------------------------------------

    def start(self) -> None:
        """Make sure every record is indexed (at once when the marker says so)."""
        if self._indexing is None and not self._indexed.is_set():
            self._indexing = asyncio.get_running_loop().create_task(self._index_all())

    async def indexed(self) -> None:
        """Return once every record has its index entry; StorageUnavailable if that takes
        longer than the timeout (a reindex in progress, or Redis unreachable)."""
        if self._indexed.is_set():
            return
        self.start()
        try:
            async with asyncio.timeout(self._calls.timeout):
                await self._indexed.wait()
        except TimeoutError:
            raise StorageUnavailable("redis", Failure.REFUSED) from None

    async def stop(self, *tasks: "asyncio.Task[None]") -> None:
        """End the background work: the reindex and `tasks` (within the timeout)."""
        self._closing.set()
        running = [task for task in (self._indexing, *tasks) if task is not None]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=self._calls.timeout)

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds`; False when the adapter is closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        return not self._closing.is_set()

    async def _index_all(self) -> None:
        while not self._closing.is_set():
            try:
                await self.reindex()
                self._indexed.set()
                return
            except StorageUnavailable as exc:
                logger.warning("listing waits for Redis to index the existing records: {}", exc)
                await self._pause(RETRY_SECONDS)

    async def reindex(self) -> int:
        """Index every record that has no entry (nothing when the marker is set); how many."""
        calls, layout = self._calls, self._layout
        if (
            await calls.command(None, "GET", layout.marker, write=False, pipelined=False)
            == INDEX_FORMAT
        ):
            return 0
        logger.debug("looking for records without an index entry under {!r}", layout.prefix)
        indexed = scanned = 0
        for node, _ in await calls.groups():
            field = "" if node is None else node.name
            saved = await calls.command(
                None, "HGET", layout.reindex_cursors, field, write=False, pipelined=False
            )
            if saved == "done":
                continue
            cursor = int(saved or 0)
            while True:
                cursor, names = await self._scan(node, cursor)
                records = [name for name in names if layout.key_of(name) is not None]
                scanned += len(records)
                if records:
                    args = [part for name in records for part in (name, layout.tag_of(name))]
                    indexed += await calls.on_master(
                        node, self._scripts.reindex, args, write=True, pipelined=False
                    )
                mark = str(cursor) if cursor else "done"
                await calls.command(
                    None, "HSET", layout.reindex_cursors, field, mark, write=True, pipelined=False
                )
                if not cursor:
                    break
                if scanned and scanned % (100 * SCAN_BATCH) < len(records):
                    logger.info("building the listing index: {} records so far", scanned)
        await calls.command(None, "SET", layout.marker, INDEX_FORMAT, write=True, pipelined=False)
        await calls.command(None, "DEL", layout.reindex_cursors, write=True, pipelined=False)
        if scanned:
            logger.info("listing index built: {} records of an earlier kv indexed", indexed)
        return indexed

    async def _scan(self, node: ClusterNode | None, cursor: int) -> tuple[int, list[str]]:
        """One SCAN step over the names under the prefix on `node` (None: the standalone)."""
        args = ("SCAN", str(cursor), "MATCH", self._match, "COUNT", str(SCAN_BATCH))
        if node is None:
            next_cursor, names = await self._calls.command(
                None, *args, write=False, pipelined=False
            )
            return int(next_cursor), list(names)
        answer: Any = await self._calls.call(None, self._calls.read(*args, target_nodes=node))
        next_cursor, names = answer
        if isinstance(next_cursor, dict):  # the cluster client answers {node name: cursor}
            next_cursor = next_cursor[node.name]
        return int(next_cursor), list(names)

    # --- expiry -------------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        interval = CLUSTER_SWEEP_SECONDS if self._calls.cluster else SWEEP_SECONDS
        while await self._pause(interval):
            try:
                await self.sweep()
            except StorageUnavailable as exc:
                logger.debug("expiry sweep skipped: {}", exc)

    async def sweep(self, *, part: int | None = None) -> int:
        """Remove what is left of every record whose expiry has come (on a Cluster: in one
        part of the slots, by default this round's); how many."""
        calls = self._calls
        if part is None:
            part = int(time.time() / CLUSTER_SWEEP_SECONDS) % CLUSTER_SWEEP_PARTS
        if calls.cluster:
            # Expiring before the next round, so that some process sweeps every round.
            lock_ms = str(int(CLUSTER_SWEEP_SECONDS * 900))
            lock = ("SET", self._layout.sweep_lock, self._token, "PX", lock_ms, "NX")
            if not await calls.command(None, *lock, write=True, pipelined=False):
                return 0  # another process sweeps this round
        swept = 0
        for node, slots in await calls.groups():
            if calls.cluster:
                slots = part_of(slots, part, CLUSTER_SWEEP_PARTS)
            while True:
                done, missed = await calls.on_master(
                    node,
                    self._scripts.sweep,
                    [str(SWEEP_BATCH), *self._layout.groups(slots)],
                    write=True,
                    pipelined=False,
                )
                swept += done
                if missed:  # slots moved: the next round looks where they are now
                    calls.forget_groups()
                if done < SWEEP_BATCH:
                    break
                await asyncio.sleep(0)  # let requests run between two batches
        return swept

    # --- clear --------------------------------------------------------------------------------

    async def clear(self) -> None:
        """Delete every record (announcing each) and every entry of kv's, master by master,
        SCAN batch by SCAN batch. Each round trip has the time bound, not the whole clear,
        which may take long on a big store. Keys written while it runs may survive it."""
        calls, layout = self._calls, self._layout
        for node, _ in await calls.groups():
            tags: set[str] = set()
            cursor = 0
            while True:
                cursor, names = await self._scan(node, cursor)
                records = [name for name in names if layout.key_of(name) is not None]
                if records:
                    args = [part for name in records for part in (name, layout.tag_of(name))]
                    await calls.on_master(
                        node, self._scripts.clear, args, write=True, pipelined=False
                    )
                for name in names:
                    if (tag := self._tag_of_entries(name)) is not None:
                        tags.add(tag)
                if not cursor:
                    break
            for tag in tags:  # entries of records that had gone already: expired, or not ours
                bound: str | None = "-"
                while bound is not None:
                    keys = layout.structures(tag)
                    last = await calls.script(
                        None,
                        self._scripts.prune,
                        keys,
                        (bound, str(SCAN_BATCH)),
                        write=True,
                        pipelined=False,
                    )
                    bound = None if last is None else "(" + last

    def _tag_of_entries(self, name: str) -> str | None:
        """The tag of the group whose entries are at `name`, None if `name` holds none."""
        if not name.startswith(self._layout.prefix):
            return None
        rest = name[len(self._layout.prefix) :]
        tag, suffix = "", rest
        if rest.startswith("{") and "}" in rest:
            tag, _, suffix = rest[1:].partition("}")
        return tag if suffix in STRUCTURES else None


def part_of(slots: list[tuple[int, int]], part: int, parts: int) -> list[tuple[int, int]]:
    """The `part`-th of `parts` runs of the slots in the given ranges, as ranges."""
    every = [slot for first, last in slots for slot in range(first, last + 1)]
    chosen = every[part * len(every) // parts : (part + 1) * len(every) // parts]
    ranges: list[tuple[int, int]] = []
    for slot in chosen:
        if ranges and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return ranges


def _glob_escape(text: str) -> str:
    """`text` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
