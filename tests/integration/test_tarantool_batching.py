"""The Tarantool adapter sends the requests of one event-loop turn as one `batch` call."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from kv.adapters.tarantool import TarantoolRepository, open_tarantool_repository
from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Record, Stale
from tests.servers.tarantool import TarantoolServer


def opened(server: TarantoolServer) -> AbstractAsyncContextManager[TarantoolRepository]:
    url = server.settings()["tarantool_url"]
    return asynccontextmanager(open_tarantool_repository)(url, "kv", 2.0)


@pytest.fixture
async def small_tuples(tmp_path: Path) -> AsyncIterator[TarantoolRepository]:
    """A repository on an instance sized for 1000-byte bodies: tuples up to 1 MiB."""
    server = TarantoolServer(tmp_path, env={"KV_MAX_BODY_BYTES": "1000"})
    server.start()
    try:
        async with opened(server) as repository:
            yield repository
    finally:
        server.stop()


async def test_one_failing_operation_fails_only_its_own_request(
    small_tuples: TarantoolRepository,
) -> None:
    repository = small_tuples
    await repository.create("a", "1")
    too_big = "[" + ",".join(["1"] * 700_000) + "]"  # 1.4 MB: over the tuple limit
    results = await asyncio.gather(
        repository.replace("a", "2"),
        repository.create("big", too_big),
        repository.create("b", "3"),
        repository.get("a"),
        return_exceptions=True,
    )
    assert results[0] == Record("a", "2", 2)
    assert isinstance(results[1], StorageUnavailable)
    assert results[1].failure is Failure.REFUSED and not results[1].outcome_unknown
    assert results[2] == Record("b", "3", 1)
    assert results[3] == Record("a", "2", 2)
    assert await repository.get("big") is None


async def test_operations_in_one_batch_apply_in_the_order_they_were_made(
    tarantool_server: TarantoolServer,
) -> None:
    async with opened(tarantool_server) as repository:
        key = "batch-order"
        await repository.delete(key)
        results = await asyncio.gather(
            repository.get(key),
            repository.create(key, "1"),
            repository.create(key, "2"),
            repository.replace(key, "3", if_revision=1),
            repository.replace(key, "4", if_revision=1),
            repository.get(key),
            repository.delete(key, if_revision=9),
            repository.delete(key),
            repository.get(key),
        )
        assert results == [
            None,
            Record(key, "1", 1),
            None,
            Record(key, "3", 2),
            Stale(2),
            Record(key, "3", 2),
            Stale(2),
            2,
            None,
        ]
