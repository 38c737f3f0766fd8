"""The in-process backend: a dict.

Atomicity: every method runs from start to end without an `await`, so on the event loop no
other request can run between its check and its write. One process only (the container refuses
more than one worker with this backend).
"""

from collections.abc import AsyncIterator

from kv.domain.model import Record, Stale


class MemoryRepository:
    def __init__(self) -> None:
        self._records: dict[str, Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    async def get(self, key: str) -> Record | None:
        return self._records.get(key)

    async def create(self, key: str, value: str) -> Record | None:
        if key in self._records:
            return None
        record = self._records[key] = Record(key, value, 1)
        return record

    async def replace(
        self, key: str, value: str, *, expected_revision: int | None = None
    ) -> Record | Stale | None:
        current = self._records.get(key)
        if current is None:
            return None
        if expected_revision is not None and current.revision != expected_revision:
            return Stale(current.revision)
        record = self._records[key] = Record(key, value, current.revision + 1)
        return record

    async def upsert(self, key: str, value: str) -> Record:
        current = self._records.get(key)
        record = self._records[key] = Record(
            key, value, 1 if current is None else current.revision + 1
        )
        return record

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | Stale | None:
        current = self._records.get(key)
        if current is None:
            return None
        if expected_revision is not None and current.revision != expected_revision:
            return Stale(current.revision)
        del self._records[key]
        return current.revision

    async def clear(self) -> None:
        self._records.clear()

    async def ping(self) -> None:
        return None


async def open_memory_repository() -> AsyncIterator[MemoryRepository]:
    """The Resource that the container starts: nothing to open or close."""
    yield MemoryRepository()
