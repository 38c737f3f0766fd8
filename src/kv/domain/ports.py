"""The repository port: what the service needs from a backend.

Every operation is atomic on its own; the service never reads and then writes.
"""

from typing import Protocol

from kv.domain.model import Key, Record, Stale


class Repository(Protocol):
    async def get(self, key: Key) -> Record | None:
        """The record at `key`, or None."""

    async def create(self, key: Key, value: str) -> Record | None:
        """Store `value` at revision 1 if `key` is absent; None if it exists."""

    async def replace(
        self, key: Key, value: str, *, expected_revision: int | None = None
    ) -> Record | Stale | None:
        """Overwrite a present key (revision + 1), if at `expected_revision` when one is given.

        None when the key is absent, Stale when it is at another revision.
        """

    async def upsert(self, key: Key, value: str) -> Record:
        """Create at revision 1, or overwrite with revision + 1."""

    async def delete(self, key: Key, *, expected_revision: int | None = None) -> int | Stale | None:
        """Remove a present key (if at `expected_revision` when one is given); its last revision.

        None when the key is absent, Stale when it is at another revision.
        """

    async def clear(self) -> None:
        """Remove every key this store owns."""

    async def ping(self) -> None:
        """Return when the backend answers; raise StorageUnavailable otherwise."""
