"""The Tarantool repository: the port's operations, each one call of init.lua's functions,
the gets and single-key writes of one event-loop turn batched into one (calls.py)."""

from collections.abc import Sequence
from typing import Any

from kv.adapters.tarantool.calls import CHECK, CREATE, DELETE, GET, REPLACE, UPSERT, Operation
from kv.adapters.tarantool.errors import FAILURES, unavailable
from kv.adapters.tarantool.feed import Feed
from kv.adapters.tarantool.startup import Startup
from kv.domain import txn
from kv.domain.model import Entry, Page, Record, Stale

# An expected revision outside 1..2**64-1 cannot travel as MessagePack and matches no record:
# 0, which matches none either, is sent in its place.
_NO_REVISION = 0
_UINT64_END = 1 << 64


class TarantoolRepository(Startup, Feed):
    """kv's repository on Tarantool: the operations here, the change feed (feed.py) and the
    start-up and close (startup.py), all over the calls of calls.py."""

    # --- single keys ------------------------------------------------------------------------

    async def get(self, key: str) -> Record | None:
        found = await self._run([GET, key], key)
        return None if found is None else Record(key, found[0], found[1], found[2])

    async def create(self, key: str, value: str, *, ttl_ms: int | None = None) -> Record | None:
        applied, _, expires_at = await self._run([CREATE, key, value, ttl_ms], key)
        return Record(key, value, 1, expires_at) if applied else None

    async def replace(
        self, key: str, value: str, *, if_revision: int | None = None, ttl_ms: int | None = None
    ) -> Record | Stale | None:
        applied, revision, expires_at = await self._run(
            [REPLACE, key, value, _optional_revision(if_revision), ttl_ms], key
        )
        if applied:
            return Record(key, value, revision, expires_at)
        return None if revision is None else Stale(revision)

    async def upsert(self, key: str, value: str, *, ttl_ms: int | None = None) -> Record:
        _, revision, expires_at = await self._run([UPSERT, key, value, ttl_ms], key)
        return Record(key, value, revision, expires_at)

    async def delete(self, key: str, *, if_revision: int | None = None) -> int | Stale | None:
        applied, revision, _ = await self._run([DELETE, key, _optional_revision(if_revision)], key)
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

    async def transact(self, operations: Sequence[txn.Op]) -> Sequence[txn.Result] | txn.Abort:
        ops = [_transaction_op(op) for op in operations]
        answer = await self._call(self._transact, (ops,), key=operations[0].key, write=True)
        if not answer[0]:
            return txn.Abort(answer[1], txn.Failure(answer[2]))
        return [
            _transaction_result(op, result)
            for op, result in zip(operations, answer[1], strict=True)
        ]

    # --- the rest ---------------------------------------------------------------------------

    async def clear(self) -> None:
        await self._call(self._clear, (), key=None, write=True)

    async def ping(self) -> None:
        if self._unready is not None:
            raise self._refuse(None)
        try:
            await self._bound(self._connection.ping(timeout=0), self._timeout)
        except FAILURES as exc:
            raise unavailable(exc, None, write=False) from exc


def _transaction_op(op: txn.Op) -> Operation:
    """`op` as init.lua's `transact` takes it: {code, key, value, expected, ttl}."""
    match op:
        case txn.Create(key, value, ttl_ms):
            return [CREATE, key, value, None, ttl_ms]
        case txn.Put(key, value, expected, ttl_ms):
            return [REPLACE, key, value, _optional_revision(expected), ttl_ms]
        case txn.Delete(key, expected):
            return [DELETE, key, None, _optional_revision(expected)]
        case txn.Check(key, revision):
            return [CHECK, key, None, _optional_revision(revision)]
        case txn.Get(key):
            return [GET, key]
    raise AssertionError(op)  # every kind of operation is matched above


def _transaction_result(op: txn.Op, result: Any) -> txn.Result:
    match op:
        case txn.Create(key, value) | txn.Put(key, value):
            return Record(key, value, result[0], result[1])
        case txn.Get(key):
            return None if result is None else Record(key, result[0], result[1], result[2])
        case txn.Delete():
            return int(result)
    return None if result is None else int(result)  # a check: the revision, or None


def _optional_revision(expected: int | None) -> int | None:
    if expected is None:
        return None
    return expected if 0 < expected < _UINT64_END else _NO_REVISION
