"""init.lua upgrades, in place, a space written by the previous init.lua (issue 14).

`data/init_before_expiry.lua` is init.lua as it was before expiry: records of three fields
{key, value, revision}, and `batch` ops without a ttl. A store it wrote must come up under
the current init.lua with every record, and take ttls from then on.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asynctnt

from kv.adapters.tarantool import TarantoolRepository, open_tarantool_repository
from kv.domain.model import Entry, Key, Page, Record
from tests.servers.tarantool import PASSWORD, USER, TarantoolServer

PREVIOUS = Path(__file__).parent / "data" / "init_before_expiry.lua"


@asynccontextmanager
async def opened(server: TarantoolServer) -> AsyncIterator[TarantoolRepository]:
    url = server.settings()["tarantool_url"]
    async with asynccontextmanager(open_tarantool_repository)(url, "kv", 5.0) as repository:
        yield repository


async def write_the_old_way(server: TarantoolServer) -> None:
    """What the previous kv sent: `kv_batch` with {1, key, value} creates and
    {2, key, value, expected} replaces."""
    connection = asynctnt.Connection(
        host="127.0.0.1",
        port=server.port,
        username=USER,
        password=PASSWORD,
        fetch_schema=False,
        auto_refetch_schema=False,
        request_timeout=5.0,
        reconnect_timeout=0,
    )
    async with asyncio.timeout(5.0):
        await connection.connect()
    try:
        ops = [[1, "old/a", '{"a":1}'], [1, "old/b", "1"], [2, "old/b", "2", None]]
        answers = (await connection.call("kv_batch", (ops,)))[0]
        assert answers == [[True, 1], [True, 1], [True, 2]]
    finally:
        await connection.disconnect()


async def test_records_of_the_previous_layout_are_kept_and_can_get_a_ttl(tmp_path: Path) -> None:
    old = TarantoolServer(tmp_path, instance_file=PREVIOUS)
    old.start()
    try:
        await write_the_old_way(old)
    finally:
        old.stop()

    for start in ("upgrade", "again"):  # the upgrade is done once; a second start changes nothing
        server = TarantoolServer(tmp_path)  # the same data directory
        server.start()
        try:
            async with opened(server) as repository:
                a, b = Key("old/a"), Key("old/b")
                if start == "upgrade":
                    assert await repository.get(a) == Record(a, '{"a":1}', 1)
                    assert await repository.get(b) == Record(b, "2", 2)
                    page = await repository.list("old/", after=None, limit=10, values=False)
                    assert page == Page([Entry(a, 1), Entry(b, 2)], more=False)
                    # An old record takes a ttl, and expires by it.
                    replaced = await repository.replace(b, "3", ttl_ms=300)
                    assert isinstance(replaced, Record) and replaced.expires_at is not None
                    await asyncio.sleep(0.6)
                    assert await repository.get(b) is None
                    long = await repository.replace(a, "4", ttl_ms=3_600_000)
                    assert isinstance(long, Record) and long.expires_at is not None
                else:
                    found = await repository.get(a)
                    assert found is not None and (found.value, found.revision) == ("4", 2)
                    assert found.expires_at is not None
                    assert await repository.get(b) is None
        finally:
            server.stop()
        # Both starts log into the same file: the format was changed once, at the first.
        assert server.log.read_text().count("adding expires_at") == 1
