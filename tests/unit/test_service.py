"""The service's rules, on the memory repository (a fake that holds state)."""

import pytest

from kv.adapters.memory import MemoryRepository
from kv.domain.commands import Create, Delete, Get, Put
from kv.domain.errors import KeyExists, KeyNotFound, RevisionMismatch
from kv.domain.model import Key, Record
from kv.domain.service import KVService

A = Key("a")


@pytest.fixture
def repository() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture
def service(repository: MemoryRepository) -> KVService:
    return KVService(repository)


async def test_create_stores_revision_1(service: KVService, repository: MemoryRepository) -> None:
    assert await service.create(Create(A, "1")) == Record("a", "1", 1)
    assert await repository.get(Key("a")) == Record("a", "1", 1)


async def test_create_of_an_existing_key_raises_and_keeps_the_value(
    service: KVService, repository: MemoryRepository
) -> None:
    await service.create(Create(A, "1"))
    with pytest.raises(KeyExists) as caught:
        await service.create(Create(A, "2"))
    assert caught.value.key == "a"
    assert await repository.get(Key("a")) == Record("a", "1", 1)


async def test_replace_of_a_missing_key_raises_and_creates_nothing(
    service: KVService, repository: MemoryRepository
) -> None:
    with pytest.raises(KeyNotFound):
        await service.put(Put(A, "1"))
    assert len(repository) == 0


async def test_replace_with_a_stale_revision_raises_with_both_revisions(
    service: KVService, repository: MemoryRepository
) -> None:
    await service.create(Create(A, "1"))
    await service.put(Put(A, "2"))
    with pytest.raises(RevisionMismatch) as caught:
        await service.put(Put(A, "3", if_match=1))
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("a", 1, 2)
    assert await repository.get(Key("a")) == Record("a", "2", 2)


async def test_delete_returns_the_revision_and_then_misses(service: KVService) -> None:
    await service.create(Create(A, "1"))
    assert await service.delete(Delete(A)) == 1
    with pytest.raises(KeyNotFound):
        await service.delete(Delete(A))
    with pytest.raises(KeyNotFound):
        await service.get(Get(A))


async def test_delete_with_a_stale_revision_keeps_the_record(
    service: KVService, repository: MemoryRepository
) -> None:
    await service.create(Create(A, "1"))
    with pytest.raises(RevisionMismatch):
        await service.delete(Delete(A, if_match=2))
    assert await repository.get(Key("a")) == Record("a", "1", 1)


async def test_upsert_creates_and_overwrites(service: KVService) -> None:
    assert await service.put(Put(A, "1", upsert=True)) == Record("a", "1", 1)
    assert await service.put(Put(A, "2", upsert=True)) == Record("a", "2", 2)


async def test_upsert_with_if_match_is_a_compare_and_set(service: KVService) -> None:
    with pytest.raises(KeyNotFound):
        await service.put(Put(A, "1", if_match="*", upsert=True))
    await service.create(Create(A, "1"))
    with pytest.raises(RevisionMismatch):
        await service.put(Put(A, "2", if_match=2, upsert=True))
    assert await service.put(Put(A, "2", if_match=1, upsert=True)) == Record("a", "2", 2)


@pytest.mark.parametrize("revision", [0, 2**63, 2**64, 10**30])
async def test_a_revision_no_record_can_have_never_matches(
    service: KVService, revision: int
) -> None:
    await service.create(Create(A, "1"))
    with pytest.raises(RevisionMismatch) as caught:
        await service.put(Put(A, "2", if_match=revision))
    assert caught.value.actual == 1
    with pytest.raises(RevisionMismatch):
        await service.delete(Delete(A, if_match=revision))
    assert await service.get(Get(A)) == Record("a", "1", 1)


async def test_get_under_a_condition_reads_only_at_that_revision(service: KVService) -> None:
    with pytest.raises(KeyNotFound):
        await service.get(Get(A, if_match=1))
    await service.create(Create(A, "1"))
    await service.put(Put(A, "2"))
    assert await service.get(Get(A, if_match=2)) == Record("a", "2", 2)
    assert await service.get(Get(A, if_match="*")) == Record("a", "2", 2)
    for revision in (1, 3, 0, 2**64):
        with pytest.raises(RevisionMismatch) as caught:
            await service.get(Get(A, if_match=revision))
        assert (caught.value.key, caught.value.actual) == ("a", 2)


@pytest.mark.parametrize("upsert", [False, True])
async def test_a_create_only_put_creates_once_then_requires_the_key_absent(
    service: KVService, repository: MemoryRepository, upsert: bool
) -> None:
    assert await service.put(Put(A, "1", upsert=upsert, if_absent=True)) == Record("a", "1", 1)
    with pytest.raises(RevisionMismatch) as caught:
        await service.put(Put(A, "2", upsert=upsert, if_absent=True))
    assert (caught.value.key, caught.value.expected) == ("a", None)
    assert await repository.get(A) == Record("a", "1", 1)
