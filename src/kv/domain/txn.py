"""Transactions: the operations a repository applies all together, or none of them.

Used qualified (`from kv.domain import txn`, then `txn.Put`, `txn.Abort`), as the names are
short ones that other modules (kv.domain.commands) use for other things.
"""

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from kv.domain.errors import InvalidInput
from kv.domain.model import Key, Record

MAX_OPERATIONS = 128


class Create(NamedTuple):
    """Create an absent key (else Failure.EXISTS)."""

    key: Key
    value: str
    ttl_ms: int | None = None


class Put(NamedTuple):
    """Overwrite a present key (else NOT_FOUND), at `if_revision` when one is given (else
    REVISION_MISMATCH)."""

    key: Key
    value: str
    if_revision: int | None = None
    ttl_ms: int | None = None


class Delete(NamedTuple):
    """Delete a present key, on the conditions of a Put."""

    key: Key
    if_revision: int | None = None


class Get(NamedTuple):
    """Read a key (None when it is absent): never a condition."""

    key: Key


class Check(NamedTuple):
    """The key must be at `revision` (else NOT_FOUND or REVISION_MISMATCH), or absent when
    it is None (else EXISTS)."""

    key: Key
    revision: int | None


Op = Create | Put | Delete | Get | Check
Result = Record | int | None
"""Per operation: the record written (create, put), the record or None (get), the deleted
record's revision (delete), the current revision or None (check)."""


class Failure(enum.Enum):
    EXISTS = "exists"  # create of a present key; check None of a present key
    NOT_FOUND = "not_found"  # put, delete or check R of an absent key
    REVISION_MISMATCH = "revision_mismatch"  # present at another revision


@dataclass(frozen=True, slots=True)
class Abort:
    """A transaction's answer when an operation's condition failed: nothing was written."""

    index: int
    failure: Failure


def check(operations: Sequence[Op]) -> tuple[Op, ...]:
    """The operations of a transaction, if there are 1 to MAX_OPERATIONS of them, each on a
    key of its own."""
    if not 1 <= len(operations) <= MAX_OPERATIONS:
        raise InvalidInput(
            None,
            f"a transaction has 1 to {MAX_OPERATIONS} operations, not {len(operations)}",
        )
    seen: set[str] = set()
    for index, op in enumerate(operations):
        if op.key in seen:
            raise InvalidInput(
                op.key,
                f"operation {index}: the key {op.key!r} appears twice; each key at most once",
                index=index,
            )
        seen.add(op.key)
    return tuple(operations)
