"""The repository contract for expiry (ttl): one suite, run against every backend.

Each backend decides by its own clock, so these tests use real short ttls and only sleep
past them (a late wake-up cannot make them fail); a record that must still be there has a
ttl far longer than any test. The memory backend's clock is also driven by hand in
tests/unit/test_memory_expiry.py.
"""

import asyncio
import time

from kv.domain import txn
from kv.domain.model import Key, Record
from kv.domain.ports import Repository
from tests.conftest import Unique
from tests.contract.conftest import Stored

SHORT_MS = 300  # expires during the test
LONG_MS = 3_600_000  # never expires during the test
PAST_SHORT = 0.6  # seconds to sleep to be past SHORT_MS on the backend's clock
CLOCK_SLACK_MS = 2000  # between this process's clock and the backend's


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_expires_in(record: Record | None, ttl_ms: int, *, written_at: int) -> None:
    assert record is not None and record.expires_at is not None
    assert abs(record.expires_at - (written_at + ttl_ms)) < CLOCK_SLACK_MS, record


async def test_every_write_with_a_ttl_carries_its_expiry(
    repository: Repository, unique: Unique
) -> None:
    key = Key(unique("a"))
    started = now_ms()
    created = await repository.create(key, "1", ttl_ms=LONG_MS)
    assert_expires_in(created, LONG_MS, written_at=started)
    assert await repository.get(key) == created
    replaced = await repository.replace(key, "2", ttl_ms=2 * LONG_MS)
    assert isinstance(replaced, Record) and replaced.revision == 2
    assert_expires_in(replaced, 2 * LONG_MS, written_at=started)
    upserted = await repository.upsert(key, "3", ttl_ms=LONG_MS)
    assert_expires_in(upserted, LONG_MS, written_at=started)
    assert await repository.get(key) == upserted
    page = await repository.list(key, after=None, limit=1, values=False)
    assert page.entries[0].expires_at == upserted.expires_at


async def test_an_overwrite_without_ttl_removes_the_expiry(
    repository: Repository, unique: Unique
) -> None:
    key = Key(unique("a"))
    await repository.create(key, "1", ttl_ms=SHORT_MS)
    assert await repository.replace(key, "2") == Record(key, "2", 2)
    other = Key(unique("b"))
    await repository.upsert(other, "1", ttl_ms=SHORT_MS)
    assert await repository.upsert(other, "2") == Record(other, "2", 2)
    await asyncio.sleep(PAST_SHORT)
    assert await repository.get(key) == Record(key, "2", 2)
    assert await repository.get(other) == Record(other, "2", 2)


async def test_from_its_expiry_a_record_is_gone_for_every_operation(
    repository: Repository, unique: Unique
) -> None:
    keys = [Key(unique(name)) for name in ("get", "put", "delete", "create", "upsert", "txn")]
    for key in keys:
        await repository.create(key, "1", ttl_ms=SHORT_MS)
        await repository.replace(key, "2", ttl_ms=SHORT_MS)  # revision 2, still expiring
    await asyncio.sleep(PAST_SHORT)
    get, put, delete, create, upsert, transacted = keys
    assert await repository.get(get) is None
    assert await repository.replace(put, "3") is None
    assert await repository.replace(put, "3", if_revision=2) is None
    assert await repository.delete(delete) is None
    assert await repository.create(create, "new") == Record(create, "new", 1)
    assert await repository.upsert(upsert, "new") == Record(upsert, "new", 1)
    assert await repository.transact([txn.Check(transacted, None)]) == [None]
    page = await repository.list(unique(""), after=None, limit=100, values=True)
    assert [entry.key for entry in page.entries] == [create, upsert]


async def test_a_transaction_writes_with_a_ttl(repository: Repository, unique: Unique) -> None:
    tag = unique("")
    a, b = Key(f"{{{tag}}}a"), Key(f"{{{tag}}}b")
    await repository.create(b, "0")
    started = now_ms()
    results = await repository.transact(
        [txn.Create(a, "1", SHORT_MS), txn.Put(b, "2", None, LONG_MS)]
    )
    assert isinstance(results, list)
    created, put = results
    assert isinstance(created, Record) and isinstance(put, Record)
    assert_expires_in(created, SHORT_MS, written_at=started)
    assert_expires_in(put, LONG_MS, written_at=started)
    await asyncio.sleep(PAST_SHORT)
    assert await repository.get(a) is None
    assert await repository.get(b) == put


async def test_expired_records_are_reclaimed_within_60_s(
    repository: Repository, stored: Stored, unique: Unique
) -> None:
    """Without anyone reading them, the backend's own sweep (or expiry) removes them, and
    whatever else kv stores for them (indexes)."""
    base = unique("")
    keep = Key(base + "kept")
    await repository.create(keep, "1")
    for i in range(20):
        await repository.create(Key(f"{base}{i:02d}"), "1", ttl_ms=SHORT_MS)
    assert len(await stored(base)) >= 21
    await asyncio.sleep(PAST_SHORT)
    deadline = time.monotonic() + 60
    while (left := await stored(base)) != [keep]:
        assert time.monotonic() < deadline, f"still stored after 60 s: {left}"
        await asyncio.sleep(0.5)
