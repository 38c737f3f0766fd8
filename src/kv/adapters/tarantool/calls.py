"""How calls reach init.lua's functions, each within the timeout (deadline.py), each failure
a StorageUnavailable: the gets and single-key writes of one event-loop turn share one `batch`
call, the other operations are one call each."""

import asyncio
import functools
from typing import Any

import asynctnt

from kv.adapters.tarantool.address import TarantoolAddress
from kv.adapters.tarantool.deadline import Deadline
from kv.adapters.tarantool.errors import FAILURES, TarantoolOperationError, unavailable
from kv.domain.errors import Failure, StorageUnavailable

FUNCTIONS = ("batch", "list", "transact", "watch", "clear")
# Operation codes of init.lua's `batch` and `transact`, and the most operations one batch
# carries.
GET, CREATE, REPLACE, UPSERT, DELETE, CHECK = range(6)
MAX_BATCH = 512
# Named here: inside TarantoolRepository, `list` is its method.
Operation = list[Any]
_Pending = list[tuple[Operation, asyncio.Future[Any]]]


class Calls:
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
        except FAILURES as exc:
            raise unavailable(exc, key, write=write) from exc

    def _refuse(self, key: str | None) -> StorageUnavailable:
        """The error of a call made while Tarantool is not (yet) usable, its reason chained."""
        assert self._unready is not None
        failure, reason = self._unready
        refused = StorageUnavailable("tarantool", failure, key=key)
        refused.__cause__ = reason
        return refused

    def _bound(self, call: "asyncio.Future[Any]", seconds: float) -> "asyncio.Future[Any]":
        """`call`, failed with TimeoutError when Tarantool has not answered within `seconds`."""
        Deadline(self._loop, call, seconds)
        return call

    async def _run(self, operation: Operation, key: str) -> Any:
        """Queue `operation` for this turn's batch and return its answer."""
        if self._unready is not None:
            raise self._refuse(key)
        answer = self._loop.create_future()
        self._pending.append((operation, answer))
        if len(self._pending) == 1:
            self._loop.call_soon(self._send)
        try:
            result = await answer
        except FAILURES as exc:
            raise unavailable(exc, key, write=operation[0] != GET) from exc
        if isinstance(result, str):  # this operation failed inside Tarantool, and did nothing
            refused = TarantoolOperationError(result)  # chained, so Tarantool's words are logged
            raise unavailable(refused, key, write=False) from refused
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
                call.add_done_callback(functools.partial(self._answer, chunk, operations))

    @staticmethod
    def _answer(chunk: _Pending, operations: list[Operation], call: Any) -> None:
        """Hand each operation its own answer, or the call's failure to every one.

        asynctnt's request, future and response refer to each other: a cycle that only the
        cyclic GC frees, with the operations sent and the results received in it. Emptied
        here, those (a list or two per request) are freed as soon as their requests are
        done, and the collector runs less often, with less to walk (#19).
        """
        operations.clear()
        try:
            results = call.result()[0]
        except asyncio.CancelledError:
            Calls._fail(chunk, ConnectionError("the Tarantool call was cancelled"))
        except BaseException as exc:  # the call failed, so did each operation in it
            Calls._fail(chunk, exc)
        else:
            for (_, answer), result in zip(chunk, results, strict=True):
                if not answer.done():  # done: its request was cancelled (the client left)
                    answer.set_result(result)
            if isinstance(results, list):
                results.clear()

    @staticmethod
    def _fail(chunk: _Pending, failure: BaseException) -> None:
        for _, answer in chunk:
            if not answer.done():
                answer.set_exception(failure)
