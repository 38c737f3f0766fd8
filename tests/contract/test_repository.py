"""The repository contract: one suite, run against every backend."""

import asyncio

from kv.domain.model import Record, Stale
from kv.domain.ports import Repository
from tests.conftest import Unique


async def test_get_missing_is_none(repository: Repository, unique: Unique) -> None:
    assert await repository.get(unique("missing")) is None


async def test_create_then_get(repository: Repository, unique: Unique) -> None:
    key = unique("a")
    assert await repository.create(key, '{"x":1}') == Record(key, '{"x":1}', 1)
    assert await repository.get(key) == Record(key, '{"x":1}', 1)


async def test_create_existing_is_none_and_keeps_the_value(
    repository: Repository, unique: Unique
) -> None:
    key = unique("a")
    await repository.create(key, "1")
    assert await repository.create(key, "2") is None
    assert await repository.get(key) == Record(key, "1", 1)


async def test_replace_bumps_the_revision(repository: Repository, unique: Unique) -> None:
    key = unique("a")
    await repository.create(key, "1")
    assert await repository.replace(key, "2") == Record(key, "2", 2)
    assert await repository.replace(key, "[3]") == Record(key, "[3]", 3)
    assert await repository.get(key) == Record(key, "[3]", 3)


async def test_replace_missing_is_none_and_creates_nothing(
    repository: Repository, unique: Unique
) -> None:
    key = unique("a")
    assert await repository.replace(key, "1") is None
    assert await repository.get(key) is None


async def test_replace_with_expected_revision(repository: Repository, unique: Unique) -> None:
    key = unique("a")
    await repository.create(key, "1")
    assert await repository.replace(key, "2", if_revision=1) == Record(key, "2", 2)
    assert await repository.replace(key, "3", if_revision=1) == Stale(2)
    assert await repository.get(key) == Record(key, "2", 2)
    assert await repository.replace(unique("absent"), "3", if_revision=1) is None


async def test_upsert_creates_then_overwrites(repository: Repository, unique: Unique) -> None:
    key = unique("a")
    assert await repository.upsert(key, "1") == Record(key, "1", 1)
    assert await repository.upsert(key, '"two"') == Record(key, '"two"', 2)
    assert await repository.get(key) == Record(key, '"two"', 2)


async def test_delete_returns_the_last_revision(repository: Repository, unique: Unique) -> None:
    key = unique("a")
    await repository.create(key, "1")
    await repository.replace(key, "2")
    assert await repository.delete(key) == 2
    assert await repository.get(key) is None
    assert await repository.delete(key) is None


async def test_delete_with_expected_revision(repository: Repository, unique: Unique) -> None:
    key = unique("a")
    await repository.create(key, "1")
    assert await repository.delete(key, if_revision=7) == Stale(1)
    assert await repository.get(key) == Record(key, "1", 1)
    assert await repository.delete(key, if_revision=1) == 1
    assert await repository.delete(key, if_revision=1) is None


async def test_recreated_key_starts_again_at_revision_1(
    repository: Repository, unique: Unique
) -> None:
    key = unique("a")
    await repository.create(key, "1")
    await repository.replace(key, "2")
    await repository.delete(key)
    assert await repository.create(key, "3") == Record(key, "3", 1)


async def test_keys_and_values_are_stored_exactly(repository: Repository, unique: Unique) -> None:
    keys = [unique("a b/c%2F+é"), unique("日本語/🙂"), unique("x" * 900), unique("{tag}")]
    value = '{"s":"é\\u0000🙂","n":[1.5,-2,null,true]}'
    for key in keys:
        assert await repository.create(key, value) == Record(key, value, 1)
        assert await repository.get(key) == Record(key, value, 1)


async def test_concurrent_creates_of_one_key_let_exactly_one_win(
    repository: Repository, unique: Unique
) -> None:
    key = unique("race")
    results = await asyncio.gather(*(repository.create(key, str(i)) for i in range(64)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await repository.get(key) == winners[0]


async def test_concurrent_conditional_replaces_let_exactly_one_win(
    repository: Repository, unique: Unique
) -> None:
    key = unique("cas")
    await repository.create(key, "0")
    results = await asyncio.gather(
        *(repository.replace(key, str(i), if_revision=1) for i in range(32))
    )
    winners = [r for r in results if isinstance(r, Record)]
    assert len(winners) == 1
    assert all(r == Stale(2) for r in results if not isinstance(r, Record))
    assert await repository.get(key) == winners[0]


async def test_concurrent_upserts_count_every_write(repository: Repository, unique: Unique) -> None:
    key = unique("count")
    results = await asyncio.gather(*(repository.upsert(key, str(i)) for i in range(50)))
    assert sorted(r.revision for r in results) == list(range(1, 51))
    current = await repository.get(key)
    assert current is not None
    assert current.revision == 50


async def test_clear_removes_every_key(repository: Repository, unique: Unique) -> None:
    keys = [unique(str(i)) for i in range(5)]
    for key in keys:
        await repository.create(key, "1")
    await repository.clear()
    assert [await repository.get(key) for key in keys] == [None] * 5


async def test_ping_answers(repository: Repository) -> None:
    await repository.ping()


async def test_an_expected_revision_no_record_has_is_a_conflict(
    repository: Repository, unique: Unique
) -> None:
    # If-Match: "0" or a number of any length reaches the repository; none is an error.
    key = unique("a")
    await repository.create(key, "1")
    for expected in (0, 2**63, 2**64 - 1, 2**64, 10**30):
        assert await repository.replace(key, "2", if_revision=expected) == Stale(1)
        assert await repository.delete(key, if_revision=expected) == Stale(1)
    assert await repository.get(key) == Record(key, "1", 1)
