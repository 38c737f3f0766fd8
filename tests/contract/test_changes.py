"""The repository contract for the change feed: one suite, run against every backend."""

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import pytest

from kv.domain import txn
from kv.domain.model import Change, Key
from kv.domain.ports import Repository
from tests.conftest import Unique

WAIT = 5.0  # seconds a change may take to arrive (expiry events: see the backends' bounds)


class Feed:
    """A subscription to the repository's changes, keeping those under one prefix."""

    def __init__(self, changes: AsyncGenerator[Sequence[Change], None], prefix: str) -> None:
        self._changes = changes
        self._prefix = prefix
        self._received: list[Change] = []

    async def take(self, count: int, within: float = WAIT) -> list[Change]:
        """The next `count` changes under the prefix (fails if they do not come in time)."""
        deadline = time.monotonic() + within
        while len(self._received) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(self._received)} of {count} changes came: {self._received}"
            async with asyncio.timeout(left):
                batch = await anext(self._changes)
            self._received += [c for c in batch if c.key.startswith(self._prefix)]
        taken, self._received = self._received[:count], self._received[count:]
        return taken

    async def nothing_more(self, within: float = 0.5) -> None:
        with contextlib.suppress(TimeoutError):
            await self.take(1, within)
            pytest.fail(f"an unexpected change came: {self._received}")


@pytest.fixture
async def feed(repository: Repository, unique: Unique) -> AsyncIterator[Feed]:
    changes = repository.changes()
    async with asyncio.timeout(WAIT):
        first = await anext(changes)
    assert list(first) == []  # subscribed: what comes next was committed after this
    yield Feed(changes, unique(""))
    await changes.aclose()


async def test_writes_arrive_in_order_with_values_and_revisions(
    repository: Repository, feed: Feed, unique: Unique
) -> None:
    a, b = Key(unique("a")), Key(unique("b"))
    await repository.create(a, '{"v":1}')
    await repository.replace(a, "2")
    await repository.upsert(b, '"b"')
    await repository.delete(a)
    await repository.create(a, "3")
    await repository.replace(a, "4", if_revision=9)  # refused: no change
    changes = await feed.take(5)
    # Each key's changes in the order they were committed; across keys no order is promised
    # (on a Cluster, a and b may live on two masters).
    assert [c for c in changes if c.key == a] == [
        Change(a, 1, '{"v":1}'),
        Change(a, 2, "2"),
        Change(a, 2, None),
        Change(a, 1, "3"),
    ]
    assert [c for c in changes if c.key == b] == [Change(b, 1, '"b"')]
    await feed.nothing_more()


async def test_each_key_keeps_its_order_under_concurrent_writes(
    repository: Repository, feed: Feed, unique: Unique
) -> None:
    keys = [Key(unique(f"k{i}")) for i in range(8)]

    async def write(key: Key) -> None:
        for i in range(25):
            await repository.upsert(key, str(i))

    await asyncio.gather(*(write(key) for key in keys))
    changes = await feed.take(200)
    for key in keys:
        assert [c.revision for c in changes if c.key == key] == list(range(1, 26))
        assert [c.value for c in changes if c.key == key] == [str(i) for i in range(25)]


async def test_a_transaction_shows_each_write_and_an_aborted_one_none(
    repository: Repository, feed: Feed, unique: Unique
) -> None:
    tag = unique("t").replace("/", "-")
    base = unique("")
    a, b, c = (Key(f"{base}{{{tag}}}{n}") for n in "abc")
    await repository.create(b, "1")
    await repository.create(c, "1")
    assert await repository.transact([txn.Create(a, "2"), txn.Delete(c, 2)]) != []  # aborted
    await repository.transact([txn.Create(a, "1"), txn.Put(b, "2"), txn.Delete(c)])
    changes = await feed.take(5)
    assert changes[:2] == [Change(b, 1, "1"), Change(c, 1, "1")]
    assert sorted(changes[2:]) == sorted([Change(a, 1, "1"), Change(b, 2, "2"), Change(c, 1, None)])
    await feed.nothing_more()


async def test_an_expiry_is_a_delete_marked_expired(
    repository: Repository, feed: Feed, unique: Unique
) -> None:
    key = Key(unique("a"))
    created = await repository.create(key, "1", ttl_ms=200)
    assert created is not None
    put, expired = await feed.take(2, within=WAIT + 2)
    assert put == Change(key, 1, "1", created.expires_at)
    assert expired == Change(key, 1, None, expired=True)


async def test_closing_the_feed_unsubscribes(repository: Repository) -> None:
    changes = repository.changes()
    assert list(await anext(changes)) == []
    await changes.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(changes)
