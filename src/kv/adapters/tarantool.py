"""The Tarantool backend, over asynctnt.

Records live in one memtx space of `(key, value, revision, expires_at)` tuples, set up by
`deploy/tarantool/init.lua`, which also defines the Lua functions that make each operation
one atomic step inside Tarantool, in one round trip: `<space>_batch` (gets and single-key
writes: the requests of one event-loop turn share one call, see TarantoolRepository),
`<space>_list` (a page), `<space>_transact`, `<space>_watch` (the change feed) and
`<space>_clear`. Expiry is decided inside those functions, by Tarantool's clock. Writes
answer `applied, revision, expires_at` and never send the value back: the adapter has it.

Time and failures: every call has a deadline of `timeout` seconds that measures Tarantool,
not kv's own event loop (see `_Deadline`). While the connection is down a call fails at once,
and asynctnt reconnects in the background every `RECONNECT_SECONDS`, so the service recovers
by itself when Tarantool is back; that includes a Tarantool that is down when kv starts. A
timeout or a lost connection is `StorageUnavailable`; for a write its outcome is unknown.
"""

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import asynctnt
from asynctnt.exceptions import TarantoolDatabaseError, TarantoolError
from loguru import logger

from kv.domain.errors import ChangesLost, Failure, StorageUnavailable
from kv.domain.model import (
    Change,
    Entry,
    Page,
    Record,
    Stale,
    TxnAbort,
    TxnCheck,
    TxnCreate,
    TxnDelete,
    TxnFailure,
    TxnGet,
    TxnOp,
    TxnPut,
    TxnResult,
)

INSTANCE_FILE = "deploy/tarantool/init.lua"
DEFAULT_PORT = 3301
# init.lua's KV_TARANTOOL_USER and KV_TARANTOOL_PASSWORD defaults: a URL without a user
# connects as this one, so kv's default URL fits init.lua's defaults.
DEFAULT_USER = "kv"
DEFAULT_PASSWORD = "kv"  # noqa: S105 (init.lua's documented default, not a secret)
GUEST = "guest"
# Pause between two reconnection attempts while Tarantool is away: how soon after its return
# requests succeed again (asynctnt logs a warning per failed attempt).
RECONNECT_SECONDS = 0.5
FUNCTIONS = ("batch", "list", "transact", "watch", "clear")
# Operation codes of init.lua's `batch` and `transact`, and the most operations one batch
# carries.
_GET, _CREATE, _REPLACE, _UPSERT, _DELETE, _CHECK = range(6)
MAX_BATCH = 512
# The change feed: how long one `watch` call waits in Tarantool for a change before it
# answers an empty batch. A Tarantool that stops answering is noticed within this plus the
# timeout; an idle feed costs one call per this many seconds.
FEED_WAIT_SECONDS = 2.0
# A deadline that comes while the answer may already be waiting in the socket is put off
# once by this much, so that the loop reads it first (see `_Deadline`).
DEADLINE_GRACE_SECONDS = 0.005

# Tarantool's system views (ids fixed since 1.7) and their index on `name`. A user sees in
# them only the objects it has been granted something on.
_VSPACE = 281
_VFUNC = 297
_BY_NAME = 2
# An expected revision outside 1..2**64-1 cannot travel as MessagePack and matches no record:
# 0, which matches none either, is sent in its place.
_NO_REVISION = 0
_UINT64_END = 1 << 64
# What asynctnt raises when a request fails (a timeout is asyncio's, an OSError).
_FAILURES = (TarantoolError, OSError)
# Named here: inside TarantoolRepository, `list` is its method.
_Operation = list[Any]
_Pending = list[tuple[_Operation, asyncio.Future[Any]]]


class TarantoolSetupError(RuntimeError):
    """Tarantool answers, but is not set up for kv (space, functions or credentials)."""


@dataclass(frozen=True, slots=True)
class TarantoolAddress:
    """Where and as whom to connect: `[tarantool://][user[:password]@]host[:port]`.

    Without a user, init.lua's default user and password (`kv`, `kv`); `guest@host` connects
    without authenticating.
    """

    host: str
    port: int
    user: str = DEFAULT_USER
    password: str | None = DEFAULT_PASSWORD

    @classmethod
    def parse(cls, url: str) -> "TarantoolAddress":
        """Raise ValueError saying what is wrong with `url`."""
        text = url.strip()
        scheme, separator, rest = text.partition("://")
        if not separator:
            rest = text
        elif scheme.lower() != "tarantool":
            raise ValueError(f"the scheme must be tarantool:// or none, not {scheme}://")
        parts = urlsplit(f"//{rest}")
        if parts.path or parts.query or parts.fragment:
            raise ValueError("expected [tarantool://][user[:password]@]host:port and nothing after")
        if not parts.hostname:
            raise ValueError("the host is missing")
        try:
            port = DEFAULT_PORT if parts.port is None else parts.port
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise ValueError("the port must be a number from 1 to 65535")
        password = unquote(parts.password) if parts.password is not None else None
        if not parts.username:
            return cls(parts.hostname, port, DEFAULT_USER, password or DEFAULT_PASSWORD)
        return cls(parts.hostname, port, unquote(parts.username), password)

    def connection(self, *, timeout: float, reconnect: float) -> asynctnt.Connection:
        """A connection (not yet open) whose every request has the deadline `timeout`."""
        guest = self.user == GUEST
        return asynctnt.Connection(
            host=self.host,
            port=self.port,
            username=None if guest else self.user,
            password=None if guest else self.password,
            # Requests name the space by id and functions by name: no schema to fetch at each
            # (re)connection, nor to refetch when the schema changes.
            fetch_schema=False,
            auto_refetch_schema=False,
            connect_timeout=timeout,
            request_timeout=timeout,
            reconnect_timeout=reconnect,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


class TarantoolRepository:
    """Coalesces the gets and writes of one event-loop turn into one `batch` call (init.lua).

    Under load, many requests start in the same turn of the loop; one IPROTO call for all of
    them costs one socket write, one read wake-up and one WAL write instead of one of each
    per request, which is most of a request's CPU time here (bench/app_cost.py). A lone
    request waits for nothing: its batch leaves at the end of the current turn, and its
    deadline starts then.
    """

    def __init__(
        self,
        connection: asynctnt.Connection,
        *,
        address: TarantoolAddress,
        space: str,
        timeout: float,
    ) -> None:
        self._connection = connection
        self._address = address
        self._space = space
        self._batch, self._list, self._transact, self._watch, self._clear = (
            f"{space}_{suffix}" for suffix in FUNCTIONS
        )
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._pending: _Pending = []
        # Why calls fail at once (not yet connected since start-up, or not set up for kv),
        # and the error that says so in the log; None once the set-up was checked.
        self._unready: tuple[Failure, BaseException] | None = None
        self._connecting: asyncio.Task[None] | None = None

    # --- single keys ------------------------------------------------------------------------

    async def get(self, key: str) -> Record | None:
        found = await self._run([_GET, key], key)
        return None if found is None else Record(key, found[0], found[1], found[2])

    async def create(self, key: str, value: str, *, ttl_ms: int | None = None) -> Record | None:
        applied, _, expires_at = await self._run([_CREATE, key, value, ttl_ms], key)
        return Record(key, value, 1, expires_at) if applied else None

    async def replace(
        self,
        key: str,
        value: str,
        *,
        expected_revision: int | None = None,
        ttl_ms: int | None = None,
    ) -> Record | Stale | None:
        expected = None if expected_revision is None else _revision_arg(expected_revision)
        applied, revision, expires_at = await self._run(
            [_REPLACE, key, value, expected, ttl_ms], key
        )
        if applied:
            return Record(key, value, revision, expires_at)
        return None if revision is None else Stale(revision)

    async def upsert(self, key: str, value: str, *, ttl_ms: int | None = None) -> Record:
        _, revision, expires_at = await self._run([_UPSERT, key, value, ttl_ms], key)
        return Record(key, value, revision, expires_at)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | Stale | None:
        expected = None if expected_revision is None else _revision_arg(expected_revision)
        applied, revision, _ = await self._run([_DELETE, key, expected], key)
        if applied:
            return int(revision)
        return None if revision is None else Stale(revision)

    # --- listing and transactions -----------------------------------------------------------

    async def list(self, prefix: str, *, after: str | None, limit: int, values: bool) -> Page:
        rows, more = await self._call(self._list, (prefix, after, limit, values), key=prefix)
        if values:
            entries = [
                Entry(key, revision, expires, value) for key, revision, expires, value in rows
            ]
        else:
            entries = [Entry(key, revision, expires) for key, revision, expires in rows]
        return Page(entries, more=bool(more))

    async def transact(self, operations: Sequence[TxnOp]) -> Sequence[TxnResult] | TxnAbort:
        ops = [_transaction_op(op) for op in operations]
        answer = await self._call(self._transact, (ops,), key=operations[0].key, write=True)
        if not answer[0]:
            return TxnAbort(answer[1], TxnFailure(answer[2]))
        return [
            _transaction_result(op, result)
            for op, result in zip(operations, answer[1], strict=True)
        ]

    # --- changes ----------------------------------------------------------------------------

    async def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        """The feed, on a connection of its own: `watch` calls, each answering the changes
        after the sequence this feed has seen, or waiting up to FEED_WAIT_SECONDS for one.

        A long poll rather than box.session.push: each call has a deadline (a push stream
        would have none), nothing piles up in Tarantool for a kv that does not read (pushes
        are written out without waiting for the reader), and closing the feed leaves no
        fiber behind. A batch costs one round trip; under load batches grow by themselves.
        """
        connection = self._address.connection(timeout=self._timeout, reconnect=0)
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    await connection.connect()
                _, epoch, cursor = await self._poll(connection, None, None, 0)
            except _FAILURES as exc:
                raise _unavailable(exc, None, write=False) from exc
            yield ()
            while True:
                try:
                    answer = await self._poll(connection, epoch, cursor, FEED_WAIT_SECONDS)
                except _FAILURES as exc:
                    raise _unavailable(exc, None, write=False) from exc
                if answer[0] != "changes":  # "lost": this feed fell behind Tarantool's ring
                    raise ChangesLost()
                _, cursor, rows = answer
                if rows:
                    yield [Change(*row) for row in rows]
        finally:
            connection.close()  # a call still out is cancelled with its awaiting task

    async def _poll(
        self, connection: asynctnt.Connection, epoch: str | None, cursor: int | None, wait: float
    ) -> Any:
        call = connection.call(self._watch, (epoch, cursor, wait), timeout=0)
        response = await self._bound(call, wait + self._timeout)
        return response[0]

    # --- the rest ---------------------------------------------------------------------------

    async def clear(self) -> None:
        await self._call(self._clear, (), key=None, write=True)

    async def ping(self) -> None:
        if self._unready is not None:
            raise self._refuse(None)
        try:
            await self._bound(self._connection.ping(timeout=0), self._timeout)
        except _FAILURES as exc:
            raise _unavailable(exc, None, write=False) from exc

    # --- calls ------------------------------------------------------------------------------

    async def _call(
        self, function: str, args: tuple[Any, ...], *, key: str | None, write: bool = False
    ) -> Any:
        """Call one of init.lua's functions on its own; its answer (the returned values)."""
        if self._unready is not None:
            raise self._refuse(key)
        try:
            call = self._connection.call(function, args, timeout=0)
            return await self._bound(call, self._timeout)
        except _FAILURES as exc:
            raise _unavailable(exc, key, write=write) from exc

    def _refuse(self, key: str | None) -> StorageUnavailable:
        """The error of a call made while Tarantool is not (yet) usable, its reason chained."""
        assert self._unready is not None
        failure, reason = self._unready
        refused = StorageUnavailable("tarantool", failure, key=key)
        refused.__cause__ = reason
        return refused

    def _bound(self, call: "asyncio.Future[Any]", seconds: float) -> "asyncio.Future[Any]":
        """`call`, failed with TimeoutError when Tarantool has not answered within `seconds`."""
        _Deadline(self._loop, call, seconds)
        return call

    async def _run(self, operation: _Operation, key: str) -> Any:
        """Queue `operation` for this turn's batch and return its answer."""
        if self._unready is not None:
            raise self._refuse(key)
        answer = self._loop.create_future()
        self._pending.append((operation, answer))
        if len(self._pending) == 1:
            self._loop.call_soon(self._send)
        try:
            result = await answer
        except _FAILURES as exc:
            raise _unavailable(exc, key, write=operation[0] != _GET) from exc
        if isinstance(result, str):  # this operation failed inside Tarantool, and did nothing
            refused = TarantoolOperationError(result)  # chained, so Tarantool's words are logged
            raise _unavailable(refused, key, write=False) from refused
        return result

    def _send(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            chunk = pending[start : start + MAX_BATCH]
            operations = [operation for operation, _ in chunk]
            try:
                call = self._bound(
                    self._connection.call(self._batch, (operations,), timeout=0), self._timeout
                )
            except Exception as exc:  # not connected: asynctnt refuses at once
                # Any error here must reach the callers: nobody else would wake them.
                self._fail(chunk, exc)
            else:
                call.add_done_callback(functools.partial(self._answer, chunk))

    @staticmethod
    def _answer(chunk: _Pending, call: Any) -> None:
        """Hand each operation its own answer, or the call's failure to every one."""
        try:
            results = call.result()[0]
        except asyncio.CancelledError:
            TarantoolRepository._fail(chunk, ConnectionError("the Tarantool call was cancelled"))
        except BaseException as exc:  # the call failed, so did each operation in it
            TarantoolRepository._fail(chunk, exc)
        else:
            for (_, answer), result in zip(chunk, results, strict=True):
                if not answer.done():  # done: its request was cancelled (the client left)
                    answer.set_result(result)

    @staticmethod
    def _fail(chunk: _Pending, failure: BaseException) -> None:
        for _, answer in chunk:
            if not answer.done():
                answer.set_exception(failure)

    # --- start-up ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and check the set-up within the timeout; raise TarantoolSetupError when
        Tarantool answers but is not set up for kv. When it does not answer, calls fail at
        once (503) while a task keeps connecting, and succeed once it has."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._connection.connect()
            await self._check_setup()
        except TarantoolSetupError:
            raise
        except TarantoolDatabaseError as exc:
            raise self._refused(exc) from exc
        except _FAILURES as exc:
            logger.warning(
                "Tarantool at {} does not answer ({}); kv answers 503 until it does, and "
                "keeps connecting (run: tarantool {})",
                self._address,
                _describe(exc),
                INSTANCE_FILE,
            )
            self._unready = (Failure.UNREACHABLE, exc)
            self._connecting = self._loop.create_task(self._connect_later())

    async def _connect_later(self) -> None:
        while True:
            try:
                await self._connection.connect()  # retries every RECONNECT_SECONDS by itself
                await self._check_setup()
            except TarantoolSetupError as exc:
                self._misconfigured(exc)
                return
            except TarantoolDatabaseError as exc:
                self._misconfigured(self._refused(exc))
                return
            except _FAILURES:
                await asyncio.sleep(RECONNECT_SECONDS)
            else:
                self._unready = None
                logger.info("connected to Tarantool at {}", self._address)
                return

    def _misconfigured(self, error: TarantoolSetupError) -> None:
        # kv is already serving: it keeps answering 503 (and /ready 503) and says why, rather
        # than exit in the middle of its work; a restart after the fix picks it up.
        logger.critical("kv cannot use Tarantool: {}", error)
        self._unready = (Failure.REFUSED, error)

    def _refused(self, exc: TarantoolDatabaseError) -> TarantoolSetupError:
        return TarantoolSetupError(
            f"Tarantool at {self._address} refused the connection ({exc.message}); check the "
            f"user and password in KV_TARANTOOL_URL against {INSTANCE_FILE}'s "
            "KV_TARANTOOL_USER and KV_TARANTOOL_PASSWORD"
        )

    async def _check_setup(self) -> None:
        """Check that the space and every kv function are there for us."""
        names = [f"{self._space}_{suffix}" for suffix in FUNCTIONS]
        spaces, *functions = await asyncio.gather(
            self._connection.select(_VSPACE, (self._space,), index=_BY_NAME),
            *(self._connection.select(_VFUNC, (name,), index=_BY_NAME) for name in names),
        )
        hint = (
            f"start Tarantool with {INSTANCE_FILE} (KV_TARANTOOL_SPACE={self._space}) and "
            "connect as the user it creates (kv:kv by default)"
        )
        if not spaces:
            raise TarantoolSetupError(
                f"Tarantool at {self._address} has no space {self._space!r} this user can "
                f"use; {hint}"
            )
        missing = [name for name, rows in zip(names, functions, strict=True) if not rows]
        if missing:
            raise TarantoolSetupError(
                f"Tarantool at {self._address} lacks the function(s) {', '.join(missing)} "
                f"(or this user may not call them); {hint}"
            )

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        try:
            async with asyncio.timeout(self._timeout):
                await self._connection.disconnect()
        except TimeoutError:
            self._connection.close()  # without waiting for the socket to close


class _Deadline:
    """Fails `call` with TimeoutError once `seconds` pass without Tarantool's answer.

    Not asynctnt's own timer: under uvloop, timers run before the loop reads its sockets, so
    after kv's own loop was held up (a large body being parsed, say) that timer fired before
    the answer that had come in time was read, and kv blamed Tarantool for its own stall
    (issue 20, item 2). Here a deadline that comes while `call` is still pending waits
    DEADLINE_GRACE_SECONDS more, in which the loop reads whatever has arrived.
    """

    __slots__ = ("call", "loop", "seconds", "timer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, call: "asyncio.Future[Any]", seconds: float
    ) -> None:
        self.call = call
        self.loop = loop
        self.seconds = seconds
        self.timer = loop.call_later(seconds, self.expire, True)
        call.add_done_callback(self.cancel)

    def cancel(self, _: object) -> None:
        self.timer.cancel()

    def expire(self, grace: bool) -> None:
        if self.call.done():
            return
        if grace:
            self.timer = self.loop.call_later(DEADLINE_GRACE_SECONDS, self.expire, False)
        else:
            message = f"Tarantool did not answer within {self.seconds:g} s"
            self.call.set_exception(TimeoutError(message))


def _transaction_op(op: TxnOp) -> _Operation:
    """`op` as init.lua's `transact` takes it: {code, key, value, expected, ttl}."""
    match op:
        case TxnCreate(key, value, ttl_ms):
            return [_CREATE, key, value, None, ttl_ms]
        case TxnPut(key, value, expected, ttl_ms):
            return [_REPLACE, key, value, _optional_revision(expected), ttl_ms]
        case TxnDelete(key, expected):
            return [_DELETE, key, None, _optional_revision(expected)]
        case TxnCheck(key, revision):
            return [_CHECK, key, None, _optional_revision(revision)]
        case TxnGet(key):
            return [_GET, key]
    raise AssertionError(op)  # every kind of operation is matched above


def _transaction_result(op: TxnOp, result: Any) -> TxnResult:
    match op:
        case TxnCreate(key, value) | TxnPut(key, value):
            return Record(key, value, result[0], result[1])
        case TxnGet(key):
            return None if result is None else Record(key, result[0], result[1], result[2])
        case TxnDelete():
            return int(result)
    return None if result is None else int(result)  # a check: the revision, or None


def _unavailable(exc: BaseException, key: str | None, *, write: bool) -> StorageUnavailable:
    """The StorageUnavailable that a failure `exc` of a call on `key` becomes (the log gets
    `exc`, chained; the response only the fields)."""
    if isinstance(exc, TimeoutError):
        failure = Failure.TIMEOUT
    elif isinstance(exc, TarantoolDatabaseError | TarantoolOperationError):
        # Tarantool refused: the write was not applied.
        return StorageUnavailable("tarantool", Failure.REFUSED, key=key)
    else:
        failure = Failure.UNREACHABLE
    return StorageUnavailable("tarantool", failure, outcome_unknown=write, key=key)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class TarantoolOperationError(Exception):
    """One operation of a batch failed inside Tarantool; the others went on."""


def _revision_arg(expected: int) -> int:
    return expected if 0 < expected < _UINT64_END else _NO_REVISION


def _optional_revision(expected: int | None) -> int | None:
    return None if expected is None else _revision_arg(expected)


async def open_tarantool_repository(
    url: str,
    space: str,
    timeout: float,  # noqa: ASYNC109 (the bound of every request, the connection's setting)
) -> AsyncIterator[TarantoolRepository]:
    """The Resource the container starts: connect, check the set-up, close on exit.

    Fails at start-up when Tarantool answers but lacks what `deploy/tarantool/init.lua`
    creates, or refuses the credentials (TarantoolSetupError). A Tarantool that does not
    answer is waited for in the background, while calls get 503.
    """
    address = TarantoolAddress.parse(url)
    connection = address.connection(timeout=timeout, reconnect=RECONNECT_SECONDS)
    repository = TarantoolRepository(connection, address=address, space=space, timeout=timeout)
    try:
        await repository.start()
        yield repository
    finally:
        await repository.close()
