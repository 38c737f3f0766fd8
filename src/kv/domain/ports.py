"""The repository port: what the service needs from a backend.

Every operation is atomic on its own; the service never reads and then writes.

Time: a `ttl_ms` makes the record expire `ttl_ms` milliseconds after the write, by the
backend's clock (so several kv processes agree); `expires_at` is then that instant in
milliseconds since the Unix epoch. A write without `ttl_ms` leaves the record without
expiry. From `expires_at` on, a record does not exist for any operation (get, writes,
listings, transactions), whether or not the backend has reclaimed it yet.
"""

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from kv.domain import txn
from kv.domain.model import Change, Key, Page, Record, Stale


class Repository(Protocol):
    async def get(self, key: Key) -> Record | None:
        """The record at `key`, or None."""

    async def create(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record | None:
        """Store `value` at revision 1 if `key` is absent; None if it exists."""

    async def replace(
        self, key: Key, value: str, *, if_revision: int | None = None, ttl_ms: int | None = None
    ) -> Record | Stale | None:
        """Overwrite a present key (revision + 1), if at `if_revision` when one is given.

        None when the key is absent, Stale when it is at another revision.
        """

    async def upsert(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record:
        """Create at revision 1, or overwrite with revision + 1."""

    async def delete(self, key: Key, *, if_revision: int | None = None) -> int | Stale | None:
        """Remove a present key (if at `if_revision` when one is given); its last revision.

        None when the key is absent, Stale when it is at another revision.
        """

    async def list(self, prefix: str, *, after: str | None, limit: int, values: bool) -> Page:
        """Up to `limit` records whose key starts with `prefix` and sorts after `after` (from
        the first when None), in ascending order of the keys' UTF-8 bytes; their values only
        when `values`. `more` tells whether another matching key follows the last one.

        One consistent read where the backend allows it; O(log n + limit).
        """

    async def transact(self, operations: Sequence[txn.Op]) -> Sequence[txn.Result] | txn.Abort:
        """Apply every operation at one instant, or none.

        The operations name distinct keys. Their conditions are checked in order against the
        state before the transaction; the first that fails aborts it (txn.Abort, nothing
        written). Otherwise every write is applied together and each operation's result is
        returned in order (see txn.Result).
        """

    def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        """Every change committed to the store, through whichever process made it.

        Yields an empty batch once the subscription is in place (every change committed after
        that is delivered), then batches of changes, each key's in the order they were
        committed. A write of a transaction, an expiry and a clear are changes too. Raises
        StorageUnavailable when the subscription is lost, ChangesLost when this process fell
        too far behind the backend to be given every change. Closing the iterator
        unsubscribes.
        """

    async def clear(self) -> None:
        """Remove every key this store owns."""

    async def ping(self) -> None:
        """Return when the backend answers; raise StorageUnavailable otherwise."""
