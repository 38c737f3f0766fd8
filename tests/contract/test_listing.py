"""The repository contract for listing: one suite, run against every backend."""

import asyncio
import random

from kv.domain.model import Entry, Key, Page
from kv.domain.ports import Repository
from tests.conftest import Unique


async def every_key(repository: Repository, prefix: str, *, limit: int) -> list[str]:
    """Page through `prefix` with `limit` as a client with cursors would."""
    keys: list[str] = []
    after: str | None = None
    while True:
        page = await repository.list(prefix, after=after, limit=limit, values=False)
        assert len(page.entries) <= limit
        if page.more:
            assert len(page.entries) == limit  # every page but the last is full
        keys += [entry.key for entry in page.entries]
        if not page.more:
            return keys
        after = page.entries[-1].key


async def test_keys_come_in_the_order_of_their_utf8_bytes(
    repository: Repository, unique: Unique
) -> None:
    base = unique("")
    names = [
        "b",
        "a",
        "a/b",
        "a/",
        "ab",
        "a0",
        "é",
        "z",
        "Z",
        "日本",
        "🙂",
        "a b",
        "a%2F",
        "~",
        "\x7e1",
    ]
    keys = [base + name for name in names if not (base + name).endswith("/")]
    for key in keys:
        assert await repository.create(Key(key), "1") is not None
    listed = await every_key(repository, base, limit=1000)
    assert listed == sorted(keys, key=lambda key: key.encode())
    assert listed == sorted(keys)  # code-point order is UTF-8 byte order


async def test_a_prefix_selects_its_keys_only(repository: Repository, unique: Unique) -> None:
    base = unique("")
    for name in ("app", "app/x", "app/y/z", "apple", "ap", "b/app"):
        await repository.create(Key(base + name), '"v"')
    page = await repository.list(base + "app/", after=None, limit=10, values=False)
    assert [entry.key for entry in page.entries] == [base + "app/x", base + "app/y/z"]
    assert not page.more
    page = await repository.list(base + "app", after=None, limit=10, values=False)
    assert [e.key for e in page.entries] == [base + n for n in ("app", "app/x", "app/y/z", "apple")]
    empty = await repository.list(base + "nothing", after=None, limit=10, values=False)
    assert empty == Page([], more=False)


async def test_entries_carry_revisions_and_values_only_when_asked(
    repository: Repository, unique: Unique
) -> None:
    base = unique("")
    await repository.create(Key(base + "a"), '{"x":1}')
    await repository.create(Key(base + "b"), "[1,2]")
    await repository.replace(Key(base + "b"), '"two"')
    without = await repository.list(base, after=None, limit=10, values=False)
    assert without == Page([Entry(base + "a", 1), Entry(base + "b", 2)], more=False)
    with_values = await repository.list(base, after=None, limit=10, values=True)
    assert with_values == Page(
        [Entry(base + "a", 1, None, '{"x":1}'), Entry(base + "b", 2, None, '"two"')], more=False
    )


async def test_pages_continue_after_the_given_key_and_say_whether_more_follow(
    repository: Repository, unique: Unique
) -> None:
    base = unique("")
    keys = [f"{base}{i:03d}" for i in range(7)]
    for key in keys:
        await repository.create(Key(key), "0")
    first = await repository.list(base, after=None, limit=3, values=False)
    assert [e.key for e in first.entries] == keys[:3] and first.more
    second = await repository.list(base, after=keys[2], limit=3, values=False)
    assert [e.key for e in second.entries] == keys[3:6] and second.more
    last = await repository.list(base, after=keys[5], limit=3, values=False)
    assert [e.key for e in last.entries] == keys[6:] and not last.more
    exact = await repository.list(base, after=keys[3], limit=3, values=False)
    assert [e.key for e in exact.entries] == keys[4:] and not exact.more
    # The key after which to continue need not exist any more (deleted meanwhile).
    await repository.delete(Key(keys[2]))
    again = await repository.list(base, after=keys[2], limit=2, values=False)
    assert [e.key for e in again.entries] == keys[3:5] and again.more


async def test_deleted_keys_are_not_listed(repository: Repository, unique: Unique) -> None:
    base = unique("")
    for name in "abc":
        await repository.create(Key(base + name), "1")
    await repository.delete(Key(base + "b"))
    assert await every_key(repository, base, limit=1) == [base + "a", base + "c"]


async def test_paging_visits_every_stable_key_once_while_others_change(
    repository: Repository, unique: Unique
) -> None:
    base = unique("")
    stable = [f"{base}s/{i:04d}" for i in range(250)]
    for key in stable:
        await repository.create(Key(key), "1")
    stop = asyncio.Event()
    rng = random.Random(7)

    async def churn() -> None:
        # Keys that come and go between the stable ones, and writes to the stable ones.
        while not stop.is_set():
            key = Key(f"{base}s/{rng.randrange(250):04d}{rng.choice('ab')}")
            if await repository.create(key, "2") is None:
                await repository.delete(key)
            await repository.upsert(Key(rng.choice(stable)), "3")

    writers = [asyncio.create_task(churn()) for _ in range(4)]
    try:
        listed = await every_key(repository, base + "s/", limit=7)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    seen = [key for key in listed if key in set(stable)]
    assert seen == stable  # each exactly once, in order
    assert listed == sorted(listed) and len(set(listed)) == len(listed)
