"""The repository contract for transactions: one suite, run against every backend.

The keys of one transaction share a hash tag (`{tag}`), so that on Redis Cluster they hash
to one slot, as kv requires there.
"""

import asyncio
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from kv.container import Settings
from kv.domain import txn
from kv.domain.errors import TransactionSpansSlots
from kv.domain.model import Key, Record
from kv.domain.ports import Repository
from tests.conftest import Unique

Tagged = Callable[[str], Key]


@pytest.fixture
def tagged(unique: Unique) -> Tagged:
    """Keys of this test that all hash to one Redis Cluster slot."""
    tag = unique("t").replace("/", "-")

    def make(name: str) -> Key:
        return Key(f"{{{tag}}}/{name}")

    return make


async def test_every_operation_applies_together_and_answers_in_order(
    repository: Repository, tagged: Tagged
) -> None:
    a, b, c, d, e, f = (tagged(name) for name in "abcdef")
    await repository.create(b, "1")
    await repository.create(c, "1")
    await repository.replace(c, "2")
    await repository.create(d, "x")
    results = await repository.transact(
        [
            txn.Create(a, '{"new":true}'),
            txn.Put(b, "2", if_revision=1),
            txn.Delete(c, if_revision=2),
            txn.Get(d),
            txn.Get(e),
            txn.Check(d, 1),
            txn.Check(f, None),
        ]
    )
    assert results == [
        Record(a, '{"new":true}', 1),
        Record(b, "2", 2),
        2,
        Record(d, "x", 1),
        None,
        1,
        None,
    ]
    assert await repository.get(a) == Record(a, '{"new":true}', 1)
    assert await repository.get(b) == Record(b, "2", 2)
    assert await repository.get(c) is None
    assert await repository.get(f) is None


async def test_put_and_delete_without_a_revision_need_only_a_present_key(
    repository: Repository, tagged: Tagged
) -> None:
    a, b = tagged("a"), tagged("b")
    await repository.create(a, "1")
    await repository.create(b, "1")
    assert await repository.transact([txn.Put(a, "2"), txn.Delete(b)]) == [Record(a, "2", 2), 1]


@pytest.mark.parametrize(
    ("case", "failure"),
    [
        ("create of a present key", txn.Failure.EXISTS),
        ("put of an absent key", txn.Failure.NOT_FOUND),
        ("put at another revision", txn.Failure.REVISION_MISMATCH),
        ("put with a revision of an absent key", txn.Failure.NOT_FOUND),
        ("delete of an absent key", txn.Failure.NOT_FOUND),
        ("delete at another revision", txn.Failure.REVISION_MISMATCH),
        ("check absent of a present key", txn.Failure.EXISTS),
        ("check a revision of an absent key", txn.Failure.NOT_FOUND),
        ("check another revision", txn.Failure.REVISION_MISMATCH),
    ],
)
async def test_a_failed_condition_aborts_with_nothing_written(
    repository: Repository, tagged: Tagged, case: str, failure: txn.Failure
) -> None:
    present, absent, written, deleted = (tagged(n) for n in ("present", "absent", "w", "d"))
    await repository.create(present, "1")  # at revision 1
    await repository.create(deleted, "1")
    cases: dict[str, txn.Op] = {
        "create of a present key": txn.Create(present, "2"),
        "put of an absent key": txn.Put(absent, "2"),
        "put at another revision": txn.Put(present, "2", if_revision=7),
        "put with a revision of an absent key": txn.Put(absent, "2", if_revision=1),
        "delete of an absent key": txn.Delete(absent),
        "delete at another revision": txn.Delete(present, if_revision=2),
        "check absent of a present key": txn.Check(present, None),
        "check a revision of an absent key": txn.Check(absent, 1),
        "check another revision": txn.Check(present, 3),
    }
    failing = cases[case]
    # Writes before and after the failing operation: none of them may happen.
    before: list[txn.Op] = [txn.Create(written, "w"), txn.Delete(deleted)]
    if failing.key != present:
        before.append(txn.Put(present, "changed"))
    answer = await repository.transact([*before, failing, txn.Create(tagged("after"), "a")])
    assert answer == txn.Abort(len(before), failure)
    assert await repository.get(written) is None
    assert await repository.get(deleted) == Record(deleted, "1", 1)
    assert await repository.get(present) == Record(present, "1", 1)
    assert await repository.get(tagged("after")) is None


async def test_the_first_failing_operation_is_named(repository: Repository, tagged: Tagged) -> None:
    a = tagged("a")
    await repository.create(a, "1")
    answer = await repository.transact([txn.Get(a), txn.Check(tagged("b"), 1), txn.Create(a, "2")])
    assert answer == txn.Abort(1, txn.Failure.NOT_FOUND)


async def test_concurrent_transactions_on_one_revision_let_exactly_one_win(
    repository: Repository, tagged: Tagged
) -> None:
    shared = tagged("shared")
    await repository.create(shared, "0")
    own = [tagged(f"own{i}") for i in range(32)]
    answers = await asyncio.gather(
        *(
            repository.transact([txn.Put(shared, str(i), if_revision=1), txn.Create(key, "1")])
            for i, key in enumerate(own)
        )
    )
    winners = [i for i, answer in enumerate(answers) if not isinstance(answer, txn.Abort)]
    assert len(winners) == 1
    assert all(
        answer == txn.Abort(0, txn.Failure.REVISION_MISMATCH)
        for answer in answers
        if isinstance(answer, txn.Abort)
    )
    (winner,) = winners
    assert await repository.get(shared) == Record(shared, str(winner), 2)
    assert [await repository.get(key) is not None for key in own] == [
        i == winner for i in range(32)
    ]


async def test_a_reader_never_sees_half_a_transaction(
    repository: Repository, tagged: Tagged
) -> None:
    """Writers move units between two keys; their sum never changes for a transactional
    reader (a transaction of two gets reads one instant)."""
    a, b = tagged("a"), tagged("b")
    await repository.create(a, "100")
    await repository.create(b, "0")
    stop = asyncio.Event()

    async def mover() -> int:
        moves = 0
        while not stop.is_set():
            got = await repository.transact([txn.Get(a), txn.Get(b)])
            assert isinstance(got, list)
            ra, rb = got
            assert isinstance(ra, Record) and isinstance(rb, Record)
            amount = 1 if int(ra.value) > 0 else -1
            answer = await repository.transact(
                [
                    txn.Put(a, str(int(ra.value) - amount), if_revision=ra.revision),
                    txn.Put(b, str(int(rb.value) + amount), if_revision=rb.revision),
                ]
            )
            moves += not isinstance(answer, txn.Abort)
            await asyncio.sleep(0)  # the memory backend never yields by itself
        return moves

    movers = [asyncio.create_task(mover()) for _ in range(4)]
    try:
        for _ in range(200):
            got = await repository.transact([txn.Get(a), txn.Get(b)])
            assert isinstance(got, list)
            values = [int(record.value) for record in got if isinstance(record, Record)]
            assert sum(values) == 100, values
            await asyncio.sleep(0)
    finally:
        stop.set()
        moved = await asyncio.gather(*movers)
    assert sum(moved) > 0


async def test_keys_of_other_slots_are_refused_on_a_cluster_only(
    repository: Repository, backend: str, settings: Settings, unique: Unique
) -> None:
    def slot(key: str) -> int:
        return key_slot((settings.redis_prefix + key).encode())

    a = unique("slot-a")
    b = next(k for i in range(100) if slot(k := unique(f"slot-b{i}")) != slot(a))
    operations: list[txn.Op] = [txn.Create(a, "1"), txn.Create(b, "1")]
    if backend == "redis_cluster":
        with pytest.raises(TransactionSpansSlots) as refused:
            await repository.transact(operations)
        assert refused.value.index == 1
        assert await repository.get(a) is None
    else:
        assert await repository.transact(operations) == [Record(a, "1", 1), Record(b, "1", 1)]
