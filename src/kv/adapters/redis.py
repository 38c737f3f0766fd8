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

Pipelining (standalone): redis-py spends far more CPU on a command (pool checkout, packing,
one socket write, a timeout and a wakeup per reply) than Redis does running it, so
`_Pipeliner` lets concurrent calls share round trips. A call queues its command; a flusher
task sends everything queued as one write on one pooled connection and hands each caller
its own reply or its own error (a script error or a wrong-type key fails only that caller).
At most MAX_IN_FLIGHT batches are out at once, each on its own connection; calls made
meanwhile wait for the next, so under load batches grow by themselves and an idle service
sends each call at once. Each command is still one command or one one-key script, so each
operation stays atomic; a batch is not a transaction, and need not be: its calls are
concurrent, so any order among them is a valid one, and a call made after another call's
answer is sent after that answer was read.

The guarantees stay those above. Every call has a deadline (timeout after it was made), and a
batch is bounded by the earliest deadline of its calls (so when Redis is already slow, a
young call may fail a little before its own deadline); a call still queued at its deadline
is failed unsent. No call waits on a timer of its own: one timer per batch is cheaper. A
connection error fails the calls of the batch that had no reply yet; the reads among them
are queued once more, the writes report an unknown outcome. A reply NOSCRIPT (the script did
not run) loads the script and re-sends those calls on the same connection. The queue is
bounded: beyond it a call gets 503 at once rather than piling up.

The cluster keeps one round trip per command. Its pipeline would cut the adapter's CPU per
call about fourfold (measured: ~96 us per call one by one, ~24 us in ClusterPipeline batches of
50), but on a connection error it only hands the error back: it does not reset that node's
connections, move the node last or reload the layout, as the per-command path does and as the
recovery described above relies on. Doing that here would mean driving redis-py internals.
"""

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from kv.domain.errors import Failure, StorageUnavailable
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
# Pipelining bounds (see the module docstring). A batch of MAX_BATCH commands is one write of
# at most MAX_BATCH values; MAX_IN_FLIGHT batches (each on its own connection) let Redis work
# on one while the replies of another are handed out; MAX_QUEUED calls waiting is far beyond
# what a healthy Redis leaves queued, so a call beyond it fails at once instead of waiting.
MAX_BATCH = 256
MAX_IN_FLIGHT = 2
MAX_QUEUED = 4096

# What a call can raise when Redis is down, slow or refuses: redis-py's errors, the cluster
# client's own (not RedisErrors), OS errors it lets through, and our TimeoutError (an OSError).
_FAILURES = (RedisError, RedisClusterException, OSError)

Command = tuple[str | int, ...]
_BIG_VALUE = 6000  # bytes; redis-py's own cut-off


class RedisRepository:
    def __init__(self, client: "Redis | RedisCluster", *, prefix: str, timeout: float) -> None:
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
        if not isinstance(client, RedisCluster):
            sources = {REPLACE_SCRIPT: self._replace, UPSERT_SCRIPT: self._upsert}
            sources[DELETE_SCRIPT] = self._delete
            scripts = {script.sha: source for source, script in sources.items()}
            self._pipeliner = _Pipeliner(client, scripts=scripts, timeout=timeout)

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
        except _FAILURES as exc:
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
            async with asyncio.timeout(self._timeout):
                return await command
        except _FAILURES as exc:
            raise _unavailable(exc, key, write=write) from exc
        except Exception as exc:
            if not self._cluster:
                raise
            # When a node restarts under concurrent load, redis-py's cluster client can fail
            # from inside its connection handling with whatever the moment gives: uvloop's
            # RuntimeError for a write to a closed transport (`kv serve` runs uvloop; asyncio's
            # own loop raises nothing there), an AttributeError on a connection another task
            # has just torn down. tests/integration/test_faults_under_load.py met both as
            # 500s. From that client, any failure of a call means the call failed.
            raise _unavailable(exc, key, write=write) from exc


def _unavailable(exc: BaseException, key: str | None, *, write: bool) -> StorageUnavailable:
    """The StorageUnavailable that a Redis failure `exc` of a call on `key` becomes."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        failure = Failure.TIMEOUT
    elif isinstance(exc, ResponseError):
        failure = Failure.REFUSED
    else:
        failure = Failure.UNREACHABLE
    error = StorageUnavailable("redis", failure, outcome_unknown=write, key=key)
    error.__cause__ = exc  # what `raise error from exc` does, for errors handed to a future
    return error


@dataclass(slots=True)
class _Call:
    """One caller's command, waiting in the queue or in a batch for its reply."""

    key: str
    command: Command
    packed: list[bytes]  # the command in the Redis protocol
    write: bool
    deadline: float  # loop time by which the caller has its answer, an error at the latest
    future: "asyncio.Future[Any]"
    resent: bool = False  # a read already sent once, on a connection that died


class _NoReply:
    """The place of a reply not read (yet)."""


_NO_REPLY = _NoReply()


class _Pipeliner:
    """Sends the commands of concurrent calls to a standalone Redis in shared round trips.

    `send` queues a command and returns the future of its reply. Flusher tasks (at most
    `max_in_flight`, each with one batch on its own pooled connection at a time) run while
    the queue holds calls and end when it is empty, so an idle service holds no task.
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
        # How the client encodes text (the URL may set it), so replies decode as sent.
        options = self._pool.connection_kwargs
        self._encoding = (
            str(options.get("encoding", "utf-8")),
            str(options.get("encoding_errors", "strict")),
        )
        self._timeout = timeout
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued
        self._queue: deque[_Call] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        # A flusher is created but has not taken its batch yet: calls made meanwhile (in the
        # same turn of the event loop) join that batch rather than start another.
        self._starting = False
        self._closed = False

    def send(self, key: str, command: Command, *, write: bool) -> "asyncio.Future[Any]":
        """Queue `command`; the future gets its reply, or StorageUnavailable."""
        if self._closed:
            raise StorageUnavailable("redis", Failure.SHUTTING_DOWN, key=key)
        if len(self._queue) >= self._max_queued:
            raise StorageUnavailable("redis", Failure.BUSY, key=key)
        # Packed here, so that a command that cannot be encoded fails its own caller only.
        packed = _pack(command, *self._encoding)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        deadline = loop.time() + self._timeout
        self._queue.append(_Call(key, command, packed, write, deadline, future))
        self._start_flusher()
        return future

    def _start_flusher(self) -> None:
        """Start one more flusher if the bound allows and none is about to take a batch."""
        if not self._starting and len(self._flushers) < self._max_in_flight:
            self._starting = True
            flusher = asyncio.get_running_loop().create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)  # if cancelled before it ran

    async def aclose(self) -> None:
        """Refuse new calls; let the flushers send what is queued, then fail what is left.

        The flushers end by themselves within the timeout (every queued call has a deadline
        at most that far away); cancelling them after that fails their calls.
        """
        self._closed = True
        if self._flushers:
            await asyncio.wait(set(self._flushers), timeout=self._timeout)
        for flusher in list(self._flushers):
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        self._fail_queued()

    def _fail_queued(self) -> None:
        while self._queue:
            call = self._queue.popleft()
            if not call.future.done():
                call.future.set_exception(
                    StorageUnavailable("redis", Failure.SHUTTING_DOWN, key=call.key)
                )

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

    def _take(self) -> list[_Call]:
        """The next batch from the queue, without the calls that need no sending any more."""
        now = asyncio.get_running_loop().time()
        batch: list[_Call] = []
        queue = self._queue
        while queue and len(batch) < self._max_batch:
            call = queue.popleft()
            if call.future.done():  # its caller was cancelled
                continue
            if call.deadline <= now:  # Redis is too slow to have served it in time
                timeout = TimeoutError("no batch slot before the deadline")
                # Never sent, so a write was not applied.
                call.future.set_exception(_unavailable(timeout, call.key, write=False))
                continue
            batch.append(call)
        return batch

    async def _run(self, batch: list[_Call]) -> None:
        """One round trip (two after NOSCRIPT) for `batch`; every call of it is then settled."""
        replies: list[Any] = [_NO_REPLY] * len(batch)
        failure: BaseException | None = None
        connection: AbstractConnection | None = None
        try:
            async with asyncio.timeout_at(min(call.deadline for call in batch)):
                # Untyped in redis-py; the same checkout its own commands and pipelines use.
                connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                payload = [chunk for call in batch for chunk in call.packed]
                await _exchange(connection, payload, replies, range(len(batch)))
                missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if missing:  # Redis forgot the scripts (restart, failover, SCRIPT FLUSH)
                    await self._reload_and_rerun(connection, batch, replies, missing)
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
        batch: list[_Call],
        replies: list[Any],
        missing: list[int],
    ) -> None:
        """Load the scripts NOSCRIPT named and re-send those calls: one more round trip."""
        shas = {batch[i].command[1] for i in missing}
        payload: list[bytes] = []
        for sha in shas:
            payload += _pack(("SCRIPT", "LOAD", self._scripts[str(sha)]), *self._encoding)
        for i in missing:
            replies[i] = _NO_REPLY
            payload += batch[i].packed
        # A failed load shows as NOSCRIPT again in the replies of the calls that needed it.
        slots: list[int | None] = [None] * len(shas)
        slots.extend(missing)
        await _exchange(connection, payload, replies, slots)

    def _settle(
        self, batch: list[_Call], replies: list[Any], failure: BaseException | None
    ) -> None:
        """Hand each call its reply or its error; queue again the reads a dead connection lost."""
        resend: list[_Call] = []
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
                error = _unavailable(reply, call.key, write=call.write)
                call.future.set_exception(error)
            else:
                call.future.set_result(reply)
        # At the head of the queue: they are the oldest, and their deadlines still hold.
        self._queue.extendleft(reversed(resend))

    def _error(self, call: _Call, failure: BaseException | None) -> BaseException:
        """What the caller of `call` gets when `failure` left it without a reply."""
        if isinstance(failure, _FAILURES):
            return _unavailable(failure, call.key, write=call.write)
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
) -> None:
    """Send packed commands in one write, then store the n-th reply at `replies[slots[n]]`.

    An error reply is stored, not raised: it is that command's alone. Replies are read
    without redis-py's per-read socket timeout (a timer per reply): the caller bounds the
    whole exchange, and a read it interrupts makes redis-py drop the connection.
    """
    await connection.send_packed_command(payload, check_health=False)
    for slot in slots:
        try:
            reply = await connection.read_response(timeout=math.inf)
        except ResponseError as exc:
            reply = exc
        if slot is not None:
            replies[slot] = reply


def _glob_escape(text: str) -> str:
    """`text` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


async def open_redis_repository(
    url: str,
    prefix: str,
    cluster: bool,
    timeout: float,  # noqa: ASYNC109 (bounds each Redis call the client makes, not this one)
) -> AsyncIterator[RedisRepository]:
    """The Resource the container starts: a client for `url`, closed on the way out.

    Every call as a whole is bounded by `timeout` (a call may connect, authenticate and, on
    NOSCRIPT, load a script: several socket operations), and so is every socket operation
    redis-py does on its own (the pipeliner reads its replies under the call's bound only).
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    client = RedisCluster.from_url(url, **options) if cluster else Redis.from_url(url, **options)
    repository = RedisRepository(client, prefix=prefix, timeout=timeout)
    try:
        await repository.prepare()
        yield repository
    finally:
        try:
            await repository.aclose()
        finally:
            await client.aclose()


def _pack(command: Command, encoding: str, errors: str) -> list[bytes]:
    """`command` in the Redis protocol: the bytes redis-py's `pack_command` would write.

    redis-py passes each argument through a general encoder (bytes, memoryview, float, bool
    checks) and builds the command piece by piece: a third of the adapter's CPU time. kv's
    arguments are only text and integers. Like redis-py, a value above `_BIG_VALUE` bytes is
    handed to the socket as its own buffer rather than copied into a bigger one.
    """
    buffers: list[bytes] = []
    pieces = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode(encoding, errors) if isinstance(arg, str) else b"%d" % arg
        if len(data) > _BIG_VALUE:
            pieces.append(b"$%d\r\n" % len(data))
            buffers += (b"".join(pieces), data)
            pieces = [b"\r\n"]
        else:
            pieces.append(b"$%d\r\n%b\r\n" % (len(data), data))
    buffers.append(b"".join(pieces))
    return buffers
