"""The service's rules, on the memory repository (a fake that holds state)."""

import pytest

from kv.adapters.memory import MemoryRepository
from kv.domain.errors import InvalidKey, KeyExists, KeyNotFound, RevisionMismatch
from kv.domain.model import Record
from kv.domain.service import KVService


@pytest.fixture
def repository() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture
def service(repository: MemoryRepository) -> KVService:
    return KVService(repository)


async def test_create_stores_revision_1(service: KVService, repository: MemoryRepository) -> None:
    assert await service.create("a", "1") == Record("a", "1", 1)
    assert await repository.get("a") == Record("a", "1", 1)


async def test_create_of_an_existing_key_raises_and_keeps_the_value(
    service: KVService, repository: MemoryRepository
) -> None:
    await service.create("a", "1")
    with pytest.raises(KeyExists) as caught:
        await service.create("a", "2")
    assert caught.value.key == "a"
    assert await repository.get("a") == Record("a", "1", 1)


async def test_replace_of_a_missing_key_raises_and_creates_nothing(
    service: KVService, repository: MemoryRepository
) -> None:
    with pytest.raises(KeyNotFound):
        await service.replace("a", "1")
    assert len(repository) == 0


async def test_replace_with_a_stale_revision_raises_with_both_revisions(
    service: KVService, repository: MemoryRepository
) -> None:
    await service.create("a", "1")
    await service.replace("a", "2")
    with pytest.raises(RevisionMismatch) as caught:
        await service.replace("a", "3", expected_revision=1)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("a", 1, 2)
    assert await repository.get("a") == Record("a", "2", 2)


async def test_delete_returns_the_revision_and_then_misses(service: KVService) -> None:
    await service.create("a", "1")
    assert await service.delete("a") == 1
    with pytest.raises(KeyNotFound):
        await service.delete("a")
    with pytest.raises(KeyNotFound):
        await service.get("a")


async def test_delete_with_a_stale_revision_keeps_the_record(
    service: KVService, repository: MemoryRepository
) -> None:
    await service.create("a", "1")
    with pytest.raises(RevisionMismatch):
        await service.delete("a", expected_revision=2)
    assert await repository.get("a") == Record("a", "1", 1)


async def test_upsert_creates_and_overwrites(service: KVService) -> None:
    assert await service.upsert("a", "1") == Record("a", "1", 1)
    assert await service.upsert("a", "2") == Record("a", "2", 2)


@pytest.mark.parametrize("operation", ["get", "create", "replace", "upsert", "delete"])
async def test_an_invalid_key_is_refused_before_the_repository_is_asked(
    service: KVService, repository: MemoryRepository, operation: str
) -> None:
    await repository.create("a/", "1")  # a record the rules forbid, planted behind their back
    call = getattr(service, operation)
    args = ("a/",) if operation in ("get", "delete") else ("a/", "2")
    with pytest.raises(InvalidKey):
        await call(*args)
    assert await repository.get("a/") == Record("a/", "1", 1)
