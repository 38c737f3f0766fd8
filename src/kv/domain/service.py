"""The service: the store's rules on top of any repository."""

from kv.domain.errors import KeyExists, KeyNotFound, RevisionMismatch
from kv.domain.model import Conflict, Record, validate_key
from kv.domain.ports import Repository


class KVService:
    """Create, overwrite, upsert, read and delete records.

    Values arrive as compact JSON text already checked by `validate_value`; keys are checked
    here, before the repository is asked, so a bad key is an error even when it is absent.
    """

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    async def get(self, key: object) -> Record:
        key = validate_key(key)
        record = await self.repository.get(key)
        if record is None:
            raise KeyNotFound(key)
        return record

    async def create(self, key: object, value: str) -> Record:
        key = validate_key(key)
        record = await self.repository.create(key, value)
        if record is None:
            raise KeyExists(key)
        return record

    async def replace(
        self, key: object, value: str, *, expected_revision: int | None = None
    ) -> Record:
        key = validate_key(key)
        answer = await self.repository.replace(key, value, expected_revision=expected_revision)
        if answer is None:
            raise KeyNotFound(key)
        if isinstance(answer, Conflict):
            raise RevisionMismatch(key, expected=expected_revision or 0, actual=answer.revision)
        return answer

    async def upsert(self, key: object, value: str) -> Record:
        return await self.repository.upsert(validate_key(key), value)

    async def delete(self, key: object, *, expected_revision: int | None = None) -> int:
        """Delete the record; return the revision it had."""
        key = validate_key(key)
        answer = await self.repository.delete(key, expected_revision=expected_revision)
        if answer is None:
            raise KeyNotFound(key)
        if isinstance(answer, Conflict):
            raise RevisionMismatch(key, expected=expected_revision or 0, actual=answer.revision)
        return answer

    async def clear(self) -> None:
        await self.repository.clear()

    async def ping(self) -> None:
        await self.repository.ping()
