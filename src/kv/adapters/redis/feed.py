"""The change feed: subscriptions to the channels the write scripts publish on.

Every write script publishes its changes as its last step (layout.py says how), so a key's
changes are published in the order they were committed, and Redis delivers one connection's
messages in the order they were published.

On a standalone Redis there is one channel, `<prefix>changes/`, and one subscriber connection.
On a Cluster every slot has its own shard channel, `<prefix>{<tag>}changes/`, to which the
scripts of that slot publish with SPUBLISH (sharded pub/sub): a message stays on the master
that owns the slot (and its replicas), so a change costs nothing more when nobody listens, and
a feed holds one connection per master, subscribed to the channels of that master's slots,
which delivers each message itself, as it commits it. (Classic PUBLISH would send every
change to every node over the cluster bus, listened to or not, and a subscriber on one node
would get other masters' changes a bus hop late, after changes made since on its own.) When a
slot moves to another master, Redis ends its channels' subscriptions (`sunsubscribe`): changes
made during the move may not have reached this feed, so it ends with ChangesLost, and the
watchers list again.

The subscriptions are confirmed before the feed says it is in place. While nothing comes, each
connection sends a PING after IDLE_SECONDS / 2 to IDLE_SECONDS (see Subscription.run) and
expects an answer within the timeout: a Redis that stopped answering, like a lost
connection, ends the feed with StorageUnavailable (Redis drops a subscriber that falls too
far behind, by its `client-output-buffer-limit pubsub`; kv sees that as a lost connection).
It never reconnects by itself: changes published meanwhile would be lost unnoticed; the watch
hub starts a new feed, and watchers list again.
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection

from kv.adapters.redis.deadline import RedisDeadline
from kv.adapters.redis.errors import FAILURES, unavailable
from kv.adapters.redis.layout import parse_changes
from kv.adapters.redis.pipeline import pack
from kv.domain.errors import ChangesLost, Failure, KVError, StorageUnavailable
from kv.domain.model import Change

IDLE_SECONDS = 5.0
MAX_BATCH = 10_000  # changes handed on at once, at most
MAX_PENDING = 10_000  # messages read but not taken: the consumer is stuck, the feed ends


class Subscription:
    """A subscription to `channels` through `client` (its own, closed with the subscription;
    its replies undecoded, as the messages are parsed as bytes); `sharded`: shard channels.

    The messages are read straight off the PubSub's connection, one read always waiting on
    each connection (no timer per message, no polling): a master's messages are taken as soon
    as they arrive, so that those of several masters are queued in the order they came.
    """

    def __init__(
        self, client: Redis, channels: Sequence[str], *, sharded: bool, timeout: float
    ) -> None:
        self._client = client
        self._channels = channels
        self._sharded = sharded
        self._timeout = timeout
        self._pubsub: PubSub = client.pubsub()

    async def open(self) -> None:
        """Subscribe and wait for Redis to confirm every channel (else StorageUnavailable)."""
        try:
            async with RedisDeadline(self._timeout):
                await self._pubsub.connect()  # type: ignore[no-untyped-call]
                connection = self._connection()
                # One SSUBSCRIBE per channel (Redis refuses one for channels of several slots),
                # all in one write: thousands of them, one per slot of the master.
                command = "SSUBSCRIBE" if self._sharded else "SUBSCRIBE"
                packed = [pack((command, channel)) for channel in self._channels]
                await connection.send_packed_command(packed, check_health=False)
                for _ in self._channels:
                    reply = await self._read(connection)
                    if _kind(reply) not in ("subscribe", "ssubscribe"):
                        raise StorageUnavailable("redis", Failure.REFUSED)
        except FAILURES as exc:
            raise unavailable(exc, None, write=False) from exc

    async def run(self, deliver: Callable[[list[Change]], None]) -> None:
        """Hand on the changes of every message until the subscription fails (raises).

        A quiet IDLE_SECONDS sends a PING; no answer within the timeout is a failure. While
        messages flow the deadline is moved on only once half of it has passed: one timer
        per half period, not one per message (a busy feed read ~40% of its time in setting
        and cancelling them). A quiet connection is then noticed after IDLE_SECONDS / 2 to
        IDLE_SECONDS.
        """
        connection = self._connection()
        loop = asyncio.get_running_loop()
        pinged = False
        while True:
            try:
                async with asyncio.timeout(None) as quiet:
                    while True:
                        allowed = self._timeout if pinged else IDLE_SECONDS
                        due, now = quiet.when(), loop.time()
                        if due is None or due - now < allowed / 2:
                            quiet.reschedule(now + allowed)
                        reply = await self._read(connection)
                        pinged = False
                        kind = _kind(reply)
                        if kind in ("message", "smessage"):
                            deliver(parse_changes(reply[2]))
                        elif kind == "sunsubscribe":  # Redis moved a slot: its changes go elsewhere
                            raise ChangesLost()
                        # else a pong
            except TimeoutError:
                if pinged:
                    raise StorageUnavailable("redis", Failure.TIMEOUT) from None
                await self._ping(connection)
                pinged = True
            except FAILURES as exc:
                raise unavailable(exc, None, write=False) from exc

    async def _read(self, connection: AbstractConnection) -> Any:
        # A read interrupted by the idle timer loses nothing (the parser keeps what it has),
        # so the connection is kept. RESP3 (redis-py's default) sends messages as pushes.
        reply = await connection.read_response(push_request=True, disconnect_on_error=False)
        _raise_if_cancelled()
        return reply

    async def _ping(self, connection: AbstractConnection) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await connection.send_packed_command(pack(("PING",)))
        except (*FAILURES, TimeoutError) as exc:
            raise unavailable(exc, None, write=False) from exc

    def _connection(self) -> AbstractConnection:
        connection = self._pubsub.connection
        if connection is None:
            raise StorageUnavailable("redis", Failure.UNREACHABLE)
        return connection

    async def aclose(self) -> None:
        """Unsubscribe (best effort, within the timeout) and close the connection."""
        with contextlib.suppress(*FAILURES):
            async with asyncio.timeout(self._timeout):
                if self._pubsub.connection is not None:
                    command = "SUNSUBSCRIBE" if self._sharded else "UNSUBSCRIBE"
                    await self._pubsub.connection.send_packed_command(pack((command,)))
        with contextlib.suppress(*FAILURES):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(*FAILURES):
            await self._client.aclose()


async def feed(
    opening: Sequence[Callable[[], Awaitable[Subscription]]],
) -> AsyncGenerator[Sequence[Change], None]:
    """The changes heard by every subscription `opening` makes, as Repository.changes says.

    Each subscription is read by a task of its own into one queue, in the order its
    messages arrive; what has queued up is handed on as one batch.
    """
    subscriptions: list[Subscription] = []
    readers: list[asyncio.Task[None]] = []
    queue: asyncio.Queue[list[Change] | KVError] = asyncio.Queue()

    def deliver(changes: list[Change]) -> None:
        queue.put_nowait(changes if queue.qsize() < MAX_PENDING else ChangesLost())

    async def read(subscription: Subscription) -> None:
        try:
            await subscription.run(deliver)
        except KVError as error:
            queue.put_nowait(error)

    try:
        opened = await asyncio.gather(*(open_one() for open_one in opening), return_exceptions=True)
        subscriptions = [outcome for outcome in opened if isinstance(outcome, Subscription)]
        for outcome in opened:
            if isinstance(outcome, BaseException):
                raise outcome
        for failure in await asyncio.gather(
            *(subscription.open() for subscription in subscriptions), return_exceptions=True
        ):
            if failure is not None:
                raise failure
        loop = asyncio.get_running_loop()
        readers = [loop.create_task(read(subscription)) for subscription in subscriptions]
        yield ()
        while True:
            item = await queue.get()
            batch: list[Change] = []
            while True:
                if isinstance(item, KVError):
                    raise item
                batch += item
                if queue.empty() or len(batch) >= MAX_BATCH:
                    break
                item = queue.get_nowait()
            yield batch
    finally:
        for reader in readers:
            reader.cancel()
        # Closing the connections ends a reader that missed its cancellation (see below).
        await asyncio.gather(*(subscription.aclose() for subscription in subscriptions))
        if readers:
            await asyncio.wait(readers, timeout=IDLE_SECONDS)


def _kind(reply: Any) -> str:
    """The kind of a pub/sub reply: "smessage", "ssubscribe", ... ("" for a plain reply)."""
    if isinstance(reply, list) and reply and isinstance(reply[0], bytes):
        return reply[0].decode()
    return ""


def _raise_if_cancelled() -> None:
    """Raise the cancellation of this task if redis-py lost it.

    redis-py 8.1 on Python 3.11 can lose a cancellation that arrives while it takes a
    connection or reads with a timeout, and return as if nothing happened; the task is then
    still marked as being cancelled. A feed whose consumer went away must stop, not go on
    handing changes to nobody (or to the watchers of the next feed).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
