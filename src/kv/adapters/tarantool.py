"""The Tarantool backend, over asynctnt.

Records live in one memtx space of `(key, value, revision)` tuples, set up by
`deploy/tarantool/init.lua`, which also defines the Lua functions that make each write one
atomic step inside Tarantool (`<space>_batch`, `<space>_clear`). Every get and write goes
through `batch`: the requests of one event-loop turn share one call (see
TarantoolRepository). Writes answer `applied, revision` and never send the value back: the
adapter already has it.

Time and failures: the connection gives every request `timeout` seconds (asynctnt arms one
timer per request). While the connection is down a request fails at once, and asynctnt
reconnects in the background every `RECONNECT_SECONDS`, so the service recovers by itself
when Tarantool is back. A timeout or a lost connection is `StorageUnavailable`; for a write
that means its outcome is unknown.
"""

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import asynctnt
from asynctnt.exceptions import TarantoolDatabaseError, TarantoolError

from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Record, Stale

INSTANCE_FILE = "deploy/tarantool/init.lua"
DEFAULT_PORT = 3301
# Pause between two reconnection attempts while Tarantool is away: how soon after its return
# requests succeed again (asynctnt logs a warning per failed attempt).
RECONNECT_SECONDS = 0.5
FUNCTIONS = ("batch", "clear")
# Operation codes of init.lua's `batch`, and the most operations one call carries.
_GET, _CREATE, _REPLACE, _UPSERT, _DELETE = range(5)
MAX_BATCH = 512

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


class TarantoolSetupError(RuntimeError):
    """Tarantool answers, but is not set up for kv (space, functions or credentials)."""


class TarantoolUnreachable(RuntimeError):
    """Tarantool cannot be reached at start-up; the message says where and what to run."""


@dataclass(frozen=True, slots=True)
class TarantoolAddress:
    """Where and as whom to connect: `[tarantool://][user[:password]@]host[:port]`."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None

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
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname, port, user, password)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user or 'guest'}@{host}:{self.port}"


class TarantoolRepository:
    """Coalesces the requests of one event-loop turn into one `batch` call (see init.lua).

    Under load, many requests start in the same turn of the loop; one IPROTO call for all of
    them costs one socket write, one read wake-up and one WAL write instead of one of each
    per request, which is most of a request's CPU time here (bench/app_cost.py). A lone
    request waits for nothing: its batch leaves at the end of the current turn.
    """

    def __init__(self, connection: asynctnt.Connection, *, space: str, timeout: float) -> None:
        self._connection = connection
        self._batch = f"{space}_batch"
        self._clear = f"{space}_clear"
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._pending: list[tuple[list[Any], asyncio.Future[Any]]] = []

    async def get(self, key: str) -> Record | None:
        found = await self._run([_GET, key], key)
        return None if found is None else Record(key, found[0], found[1])

    async def create(self, key: str, value: str) -> Record | None:
        applied, _ = await self._run([_CREATE, key, value], key)
        return Record(key, value, 1) if applied else None

    async def replace(
        self, key: str, value: str, *, expected_revision: int | None = None
    ) -> Record | Stale | None:
        expected = None if expected_revision is None else _revision_arg(expected_revision)
        applied, revision = await self._run([_REPLACE, key, value, expected], key)
        if applied:
            return Record(key, value, revision)
        return None if revision is None else Stale(revision)

    async def upsert(self, key: str, value: str) -> Record:
        _, revision = await self._run([_UPSERT, key, value], key)
        return Record(key, value, revision)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | Stale | None:
        expected = None if expected_revision is None else _revision_arg(expected_revision)
        applied, revision = await self._run([_DELETE, key, expected], key)
        if applied:
            return int(revision)
        return None if revision is None else Stale(revision)

    async def clear(self) -> None:
        try:
            await self._connection.call(self._clear)
        except _FAILURES as exc:
            raise _unavailable(exc, None, write=True) from exc

    async def ping(self) -> None:
        try:
            await self._connection.ping()
        except _FAILURES as exc:
            raise _unavailable(exc, None, write=False) from exc

    async def _run(self, operation: list[Any], key: str) -> Any:
        """Queue `operation` for this turn's batch and return its answer."""
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
                # A future, bounded by the connection's request timeout.
                call = self._connection.call(self._batch, (operations,))
            except Exception as exc:  # not connected: asynctnt refuses at once
                # Any error here must reach the callers: nobody else would wake them.
                self._fail(chunk, exc)
            else:
                call.add_done_callback(functools.partial(self._answer, chunk))

    @staticmethod
    def _answer(chunk: list[tuple[list[Any], asyncio.Future[Any]]], call: Any) -> None:
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
    def _fail(chunk: list[tuple[list[Any], asyncio.Future[Any]]], failure: BaseException) -> None:
        for _, answer in chunk:
            if not answer.done():
                answer.set_exception(failure)


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


class TarantoolOperationError(Exception):
    """One operation of a batch failed inside Tarantool; the others went on."""


def _revision_arg(expected: int) -> int:
    return expected if 0 < expected < _UINT64_END else _NO_REVISION


async def open_tarantool_repository(
    url: str,
    space: str,
    timeout: float,  # noqa: ASYNC109 (the bound of every request, the connection's setting)
) -> AsyncIterator[TarantoolRepository]:
    """The Resource the container starts: connect, check the set-up, close on exit.

    Fails at start-up, rather than at the first request, when Tarantool is unreachable
    (TarantoolUnreachable) or lacks what `deploy/tarantool/init.lua` creates (TarantoolSetupError).
    """
    address = TarantoolAddress.parse(url)
    connection = asynctnt.Connection(
        host=address.host,
        port=address.port,
        username=address.user,
        password=address.password,
        # Requests name the space by id and functions by name: no schema to fetch at each
        # (re)connection, nor to refetch when the schema changes.
        fetch_schema=False,
        auto_refetch_schema=False,
        connect_timeout=timeout,
        request_timeout=timeout,
        reconnect_timeout=RECONNECT_SECONDS,
    )
    try:
        try:
            # With reconnection on, asynctnt's connect() retries until it succeeds: bound it.
            async with asyncio.timeout(timeout):
                await connection.connect()
        except TarantoolDatabaseError as exc:
            raise TarantoolSetupError(
                f"Tarantool at {address} refused the connection ({exc.message}); check the "
                f"user and password in KV_TARANTOOL_URL against {INSTANCE_FILE}'s "
                "KV_TARANTOOL_USER and KV_TARANTOOL_PASSWORD"
            ) from exc
        except _FAILURES as exc:
            raise TarantoolUnreachable(
                f"cannot connect to Tarantool at {address} within {timeout:g} s; "
                f"is it running (tarantool {INSTANCE_FILE})?"
            ) from exc
        await _check_setup(connection, address, space)
        yield TarantoolRepository(connection, space=space, timeout=timeout)
    finally:
        try:
            async with asyncio.timeout(timeout):
                await connection.disconnect()
        except TimeoutError:
            connection.close()  # without waiting for the socket to close: nothing depends on it


async def _check_setup(
    connection: asynctnt.Connection, address: TarantoolAddress, space: str
) -> None:
    """Check that `space` and every kv function are there for us."""
    names = [f"{space}_{suffix}" for suffix in FUNCTIONS]
    try:
        spaces, *functions = await asyncio.gather(
            connection.select(_VSPACE, (space,), index=_BY_NAME),
            *(connection.select(_VFUNC, (name,), index=_BY_NAME) for name in names),
        )
    except _FAILURES as exc:
        raise TarantoolUnreachable(f"Tarantool at {address} failed to answer at start-up") from exc
    hint = (
        f"start Tarantool with {INSTANCE_FILE} (KV_TARANTOOL_SPACE={space}) and connect as "
        "the user it creates (KV_TARANTOOL_URL=kv:kv@host:port by default)"
    )
    if not spaces:
        raise TarantoolSetupError(
            f"Tarantool at {address} has no space {space!r} this user can use; {hint}"
        )
    missing = [name for name, rows in zip(names, functions, strict=True) if not rows]
    if missing:
        raise TarantoolSetupError(
            f"Tarantool at {address} lacks the function(s) {', '.join(missing)} "
            f"(or this user may not call them); {hint}"
        )
