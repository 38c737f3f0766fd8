"""The service: the store's rules on top of any repository."""

from collections.abc import Sequence
from typing import TypeVar

from kv.domain import txn
from kv.domain.commands import (
    ANY_REVISION,
    Condition,
    Create,
    Delete,
    Get,
    ListKeys,
    Put,
    Transaction,
    Watch,
)
from kv.domain.errors import KeyExists, KeyNotFound, RevisionMismatch, TransactionFailed
from kv.domain.model import Key, Page, Record, Stale, expected_revision
from kv.domain.ports import Repository
from kv.domain.watch import Watcher, WatchHub

T = TypeVar("T")


class KVService:
    """Create, overwrite, upsert, read and delete records.

    Every method makes one atomic repository call and turns its answer into a record or a
    domain error; it never reads and then writes.
    """

    def __init__(self, repository: Repository, watches: WatchHub | None = None) -> None:
        self.repository = repository
        self.watches = watches

    async def watch(self, command: Watch) -> Watcher:
        """A watcher of every matching change committed from now on (see WatchHub.open)."""
        if self.watches is None:
            raise RuntimeError("this service was built without a watch hub")
        return await self.watches.open(command)

    def unwatch(self, watcher: Watcher) -> None:
        if self.watches is not None:
            self.watches.close(watcher)

    async def get(self, command: Get) -> Record:
        key = command.key
        record = await self.repository.get(key)
        if record is None:
            raise KeyNotFound(key)
        expected = _expected(command.if_match)
        if expected is not None and record.revision != expected:
            # The condition is checked on the record read: one read, so no race to lose.
            raise RevisionMismatch(key, expected=expected, actual=record.revision)
        return record

    async def create(self, command: Create) -> Record:
        record = await self.repository.create(command.key, command.value, ttl_ms=command.ttl_ms)
        if record is None:
            raise KeyExists(command.key)
        return record

    async def put(self, command: Put) -> Record:
        key = command.key
        if command.if_absent:
            # The repository's create-if-absent: atomic on every backend.
            created = await self.repository.create(key, command.value)
            if created is None:
                raise RevisionMismatch(key, expected=None, actual=None)
            return created
        if command.upsert and command.if_match is None:
            return await self.repository.upsert(key, command.value, ttl_ms=command.ttl_ms)
        expected = _expected(command.if_match)
        answer = await self.repository.replace(
            key, command.value, if_revision=expected, ttl_ms=command.ttl_ms
        )
        return _found(key, expected, answer)

    async def delete(self, command: Delete) -> int:
        """Delete the record; return the revision it had."""
        key = command.key
        expected = _expected(command.if_match)
        return _found(key, expected, await self.repository.delete(key, if_revision=expected))

    async def list(self, command: ListKeys) -> Page:
        return await self.repository.list(
            command.prefix, after=command.after, limit=command.limit, values=command.values
        )

    async def transact(self, command: Transaction) -> Sequence[txn.Result]:
        """Apply every operation or none; TransactionFailed names the first that failed."""
        operations = command.operations
        answer = await self.repository.transact(operations)
        if isinstance(answer, txn.Abort):
            key = operations[answer.index].key
            raise TransactionFailed(key, index=answer.index, reason=answer.failure.value)
        return answer

    async def clear(self) -> None:
        await self.repository.clear()

    async def ping(self) -> None:
        await self.repository.ping()


def _found(key: Key, expected: int | None, answer: T | Stale | None) -> T:
    """The answer of a write that needs the key present (at `expected` when not None), or
    the error saying why it was not applied."""
    if answer is None:
        raise KeyNotFound(key)
    if isinstance(answer, Stale):
        raise RevisionMismatch(key, expected=expected, actual=answer.revision)
    return answer


def _expected(condition: Condition) -> int | None:
    """The revision a repository call must find, None for any."""
    if condition is None or condition == ANY_REVISION:
        return None
    return expected_revision(condition)
