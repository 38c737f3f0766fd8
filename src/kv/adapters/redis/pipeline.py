"""Pipelining on a standalone Redis: concurrent calls share round trips.

redis-py spends far more CPU on a command (pool checkout, packing, one socket write, a timeout
and a wakeup per reply) than Redis does running it, so `Pipeliner` lets concurrent calls share
round trips. A call queues its command; a flusher task sends everything queued as one write on
one pooled connection and hands each caller its own reply or its own error (a script error or
a wrong-type key fails only that caller). At most MAX_IN_FLIGHT batches are out at once, each
on its own connection; calls made meanwhile wait for the next, so under load batches grow by
themselves and an idle service sends each call at once. Each command is still one command or
one script, so each operation stays atomic; a batch is not a transaction, and need not be: its
calls are concurrent, so any order among them is a valid one, and a call made after another
call's answer is sent after that answer was read.

Deadlines measure Redis, not kv's own event loop (see deadline.py): a batch fails when Redis
has not answered it within the timeout of its being sent; a call still queued `timeout` after
it was made (the batches ahead of it are waiting for Redis) fails unsent, checked by one timer
for the whole queue. Time that kv's loop spent elsewhere (a stall of a second validating a
large body) counts against neither: such a timer fires late, sees it, and waits a moment for
the loop to catch up first. A connection error fails the calls of the batch that had no reply
yet; the reads among them are queued once more, the writes report an unknown outcome. A reply
NOSCRIPT (the script did not run) loads the script and re-sends those calls on the same
connection. The queue is bounded: beyond it a call gets 503 at once rather than piling up.

The connection protocol is driven through redis-py's public connection methods (see
compat.py): `ConnectionPool.get_connection()` and `release()`, `send_packed_command()` and
`read_response()`. The pipeliner's own pool has no socket timeout, so a reply is read without
a timer of redis-py's (one per reply would cost more than the read): its batch's deadline
bounds the whole exchange, and a read it interrupts makes redis-py drop the connection.
Commands are packed with hiredis's `pack_command`.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from kv.adapters.redis.deadline import GRACE_SECONDS, STALL_SECONDS, RedisDeadline
from kv.adapters.redis.errors import FAILURES, unavailable
from kv.domain.errors import Failure, StorageUnavailable

# A batch of MAX_BATCH commands is one write of at most MAX_BATCH values; MAX_IN_FLIGHT batches
# (each on its own connection) let Redis work on one while the replies of another are handed
# out; MAX_QUEUED calls waiting is far beyond what a healthy Redis leaves queued, so a call
# beyond it fails at once instead of waiting.
MAX_BATCH = 256
MAX_IN_FLIGHT = 2
MAX_QUEUED = 4096

Command = tuple[str | bytes | int, ...]


@dataclass(slots=True)
class Call:
    """One caller's command, waiting in the queue or in a batch for its reply."""

    key: str | None
    command: Command
    packed: bytes  # the command in the Redis protocol
    write: bool
    queued_at: float  # loop time
    future: "asyncio.Future[Any]"
    resent: bool = False  # a read already sent once, on a connection that died


class _NoReply:
    """The place of a reply not read (yet)."""


_NO_REPLY = _NoReply()


class Pipeliner:
    """Sends the commands of concurrent calls to a standalone Redis in shared round trips.

    `send` queues a command and returns the future of its reply. Flusher tasks (at most
    `max_in_flight`, each with one batch on its own pooled connection at a time) run while
    the queue holds calls and end when it is empty, so an idle service holds no task.
    `client` must be the pipeliner's own (its pool without a socket timeout).
    """

    def __init__(
        self,
        client: Redis,
        *,
        scripts: Mapping[str, str],
        timeout: float,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._pool = client.connection_pool
        self._scripts = scripts  # source by SHA1, to load on NOSCRIPT
        # How the client encodes text (the URL may set it), so that what is sent is what
        # redis-py would send; hiredis encodes text as strict UTF-8, the default.
        options = self._pool.connection_kwargs
        encoding = (
            str(options.get("encoding", "utf-8")),
            str(options.get("encoding_errors", "strict")),
        )
        self._encoding = None if encoding == ("utf-8", "strict") else encoding
        self._timeout = timeout
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued
        self._queue: deque[Call] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        # A flusher is created but has not taken its batch yet: calls made meanwhile (in the
        # same turn of the event loop) join that batch rather than start another.
        self._starting = False
        self._closed = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0

    def send(self, key: str | None, command: Command, *, write: bool) -> "asyncio.Future[Any]":
        """Queue `command`; the future gets its reply, or StorageUnavailable."""
        if self._closed:
            raise StorageUnavailable("redis", Failure.SHUTTING_DOWN, key=key)
        if len(self._queue) >= self._max_queued:
            raise StorageUnavailable("redis", Failure.BUSY, key=key)
        # Packed here, so that a command that cannot be encoded fails its own caller only.
        packed = self.pack(command)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(Call(key, command, packed, write, loop.time(), future))
        self._start_flusher()
        if self._watchdog is None:
            self._arm_watchdog()
        return future

    def pack(self, command: Command) -> bytes:
        if self._encoding is not None:
            command = tuple(
                arg.encode(*self._encoding) if isinstance(arg, str) else arg for arg in command
            )
        return pack(command)

    def _start_flusher(self) -> None:
        """Start one more flusher if the bound allows and none is about to take a batch."""
        if not self._starting and len(self._flushers) < self._max_in_flight:
            self._starting = True
            flusher = asyncio.get_running_loop().create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)  # if cancelled before it ran

    async def aclose(self) -> None:
        """Refuse new calls; let the flushers send what is queued, then fail what is left.

        The flushers end by themselves within the timeout (a batch is failed when Redis has
        not answered it in time); cancelling them after that fails their calls.
        """
        self._closed = True
        if self._flushers:
            await asyncio.wait(set(self._flushers), timeout=self._timeout)
        for flusher in list(self._flushers):
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._queue:
            call = self._queue.popleft()
            if not call.future.done():
                call.future.set_exception(
                    StorageUnavailable("redis", Failure.SHUTTING_DOWN, key=call.key)
                )

    # --- the queue's bound ------------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        """One timer for the whole queue, at the moment its oldest call has waited `timeout`."""
        if self._queue:
            loop = asyncio.get_running_loop()
            self._watchdog_at = max(self._queue[0].queued_at + self._timeout, loop.time())
            self._watchdog = loop.call_at(self._watchdog_at, self._watch)
        else:
            self._watchdog = None

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._watchdog_at > STALL_SECONDS:
            # Late: kv's loop was stalled, and the batches ahead may have been answered while
            # it was. Let them be read and the queue taken before blaming Redis.
            self._watchdog_at = now + GRACE_SECONDS
            self._watchdog = loop.call_at(self._watchdog_at, self._watch)
            return
        queue = self._queue
        while queue and (queue[0].future.done() or queue[0].queued_at + self._timeout <= now):
            call = queue.popleft()
            if not call.future.done():
                # Never sent, so a write was not applied.
                timeout = TimeoutError("the batches ahead were not answered in time")
                call.future.set_exception(unavailable(timeout, call.key, write=False))
        self._arm_watchdog()

    # --- flushing ---------------------------------------------------------------------------

    async def _flush(self) -> None:
        self._starting = False
        try:
            while batch := self._take():
                if self._queue:  # more than one batch waits: share it with another flusher
                    self._start_flusher()
                await self._run(batch)
        finally:
            # Now, not in a done callback (those run a turn later): a call queued in between
            # would see a flusher that is gone, start none, and wait for nobody.
            self._flushers.discard(asyncio.current_task())

    def _take(self) -> list[Call]:
        """The next batch from the queue, without the calls whose callers left."""
        batch: list[Call] = []
        queue = self._queue
        while queue and len(batch) < self._max_batch:
            call = queue.popleft()
            if not call.future.done():
                batch.append(call)
        return batch

    async def _run(self, batch: list[Call]) -> None:
        """One round trip (two after NOSCRIPT) for `batch`; every call of it is then settled."""
        replies: list[Any] = [_NO_REPLY] * len(batch)
        failure: BaseException | None = None
        connection: AbstractConnection | None = None
        try:
            # From here, not from when the calls were made: Redis is given `timeout` to
            # connect (if need be) and answer.
            async with RedisDeadline(self._timeout) as deadline:
                # Untyped in redis-py; the same checkout its own commands and pipelines use.
                connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                payload = [call.packed for call in batch]
                await _exchange(connection, payload, replies, range(len(batch)), deadline)
                missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if missing:  # Redis forgot the scripts (restart, failover, SCRIPT FLUSH)
                    await self._reload_and_rerun(connection, batch, replies, missing, deadline)
        except BaseException as exc:  # settled below, whatever it is; re-raised if not ours
            failure = exc
        finally:
            if connection is not None:
                await self._pool.release(connection)
        self._settle(batch, replies, failure)
        if failure is not None and not isinstance(failure, Exception):
            raise failure  # cancelled (aclose): the calls are failed, the task ends

    async def _reload_and_rerun(
        self,
        connection: AbstractConnection,
        batch: list[Call],
        replies: list[Any],
        missing: list[int],
        deadline: RedisDeadline,
    ) -> None:
        """Load the scripts NOSCRIPT named and re-send those calls: one more round trip."""
        shas = {batch[i].command[1] for i in missing}
        payload: list[bytes] = []
        for sha in shas:
            source = self._scripts[sha.decode() if isinstance(sha, bytes) else str(sha)]
            payload.append(self.pack(("SCRIPT", "LOAD", source)))
        for i in missing:
            replies[i] = _NO_REPLY
            payload.append(batch[i].packed)
        # A failed load shows as NOSCRIPT again in the replies of the calls that needed it.
        slots: list[int | None] = [None] * len(shas)
        slots.extend(missing)
        await _exchange(connection, payload, replies, slots, deadline)

    def _settle(self, batch: list[Call], replies: list[Any], failure: BaseException | None) -> None:
        """Hand each call its reply or its error; queue again the reads a dead connection lost."""
        resend: list[Call] = []
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():
                continue
            if reply is _NO_REPLY:
                if isinstance(failure, RedisConnectionError) and not call.write and not call.resent:
                    call.resent = True
                    resend.append(call)
                else:
                    call.future.set_exception(self._error(call, failure))
            elif isinstance(reply, ResponseError):  # this command's own error
                call.future.set_exception(unavailable(reply, call.key, write=call.write))
            else:
                call.future.set_result(reply)
        if resend:
            # At the head of the queue: they are the oldest.
            self._queue.extendleft(reversed(resend))
            if self._watchdog is None:
                self._arm_watchdog()

    def _error(self, call: Call, failure: BaseException | None) -> BaseException:
        """What the caller of `call` gets when `failure` left it without a reply."""
        if isinstance(failure, FAILURES):
            return unavailable(failure, call.key, write=call.write)
        if isinstance(failure, Exception):
            return failure  # a bug: let it surface as one (500), as it would unbatched
        if failure is None:  # cannot happen: every reply is read unless something failed
            return RuntimeError("Redis sent no reply to this call")
        # Cancelled (aclose) after it was sent: a write's outcome is unknown.
        return StorageUnavailable(
            "redis", Failure.SHUTTING_DOWN, outcome_unknown=call.write, key=call.key
        )


async def _exchange(
    connection: AbstractConnection,
    payload: list[bytes],
    replies: list[Any],
    slots: Iterable[int | None],
    deadline: RedisDeadline,
) -> None:
    """Send packed commands in one write, then store the n-th reply at `replies[slots[n]]`.

    An error reply is stored, not raised: it is that command's alone.
    """
    await connection.send_packed_command(payload, check_health=False)
    for slot in slots:
        try:
            reply = await connection.read_response()
        except ResponseError as exc:
            reply = exc
        deadline.progress()
        if slot is not None:
            replies[slot] = reply


def pack(command: Command) -> bytes:
    """`command` in the Redis protocol, text as UTF-8."""
    # hiredis's stub types the argument as a tuple of one element; it takes any length.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed
