"""A Tarantool killed (SIGKILL) during a transaction load leaves no transaction half applied:
each is one WAL entry, so after the restart every transaction is all there or not at all."""

import asyncio
from contextlib import asynccontextmanager

from kv.adapters.tarantool import TarantoolRepository, open_tarantool_repository
from kv.domain.errors import StorageUnavailable
from kv.domain.model import Key, Record, TxnAbort, TxnGet, TxnPut
from tests.servers.tarantool import TarantoolServer

A, B = Key("txn/a"), Key("txn/b")
TOTAL = 1000


async def move(
    repository: TarantoolRepository, committed: list[int], enough: asyncio.Event
) -> None:
    """Move one unit from A to B or back, read and written by transactions, until a failure."""
    while True:
        try:
            got = await repository.transact([TxnGet(A), TxnGet(B)])
            assert isinstance(got, list)
            a, b = got
            assert isinstance(a, Record) and isinstance(b, Record)
            amount = 1 if int(a.value) > TOTAL // 2 else -1
            answer = await repository.transact(
                [
                    TxnPut(A, str(int(a.value) - amount), expected_revision=a.revision),
                    TxnPut(B, str(int(b.value) + amount), expected_revision=b.revision),
                ]
            )
        except StorageUnavailable:
            return
        if not isinstance(answer, TxnAbort):
            committed.append(1)
            if len(committed) >= 300:
                enough.set()


async def test_a_kill_during_transactions_leaves_each_whole_or_absent(
    private_tarantool_server: TarantoolServer,
) -> None:
    server = private_tarantool_server
    url = server.settings()["tarantool_url"]
    opened = asynccontextmanager(open_tarantool_repository)
    async with opened(url, "kv", 2.0) as repository:
        await repository.create(A, str(TOTAL))
        await repository.create(B, "0")
        committed: list[int] = []
        enough = asyncio.Event()
        movers = [asyncio.create_task(move(repository, committed, enough)) for _ in range(8)]
        await asyncio.wait_for(enough.wait(), 30)
        server.kill()  # while the movers' transactions are on their way
        await asyncio.gather(*movers)

    server.start()
    async with opened(url, "kv", 2.0) as repository:
        got = await repository.transact([TxnGet(A), TxnGet(B)])
        assert isinstance(got, list)
        a, b = got
        assert isinstance(a, Record) and isinstance(b, Record)
        assert int(a.value) + int(b.value) == TOTAL
        # Both keys are written by every transaction: their revisions move together.
        assert a.revision == b.revision
        assert a.revision >= 1 + len(committed)  # every acknowledged one survived
