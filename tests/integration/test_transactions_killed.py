"""A backend killed (SIGKILL) during a transaction load leaves no transaction half applied.

8 clients move units between two keys through `kv serve`, each move one `POST /txn` of two
conditional puts; the backend is killed while they run, restarted on its data, and the two
keys are read back: their sum is unchanged and their revisions equal (every transaction wrote
both). A Tarantool transaction is one WAL entry; a Redis script's writes reach the AOF as one
MULTI/EXEC block, which a truncated file drops whole. On Tarantool every acknowledged move
also survives; Redis (`appendfsync everysec`) may lose the last ones (README, Guarantees).
"""

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.backends import FAULT_BACKENDS, private_server
from tests.integration.test_durability import wait_until_ready
from tests.integration.test_serve import start_kv, stop_kv
from tests.integration.workload import kv_environment

pytestmark = pytest.mark.slow

A, B = "{txn}/a", "{txn}/b"  # one hash tag: one Redis Cluster slot
TOTAL = 1000
MOVES_BEFORE_THE_KILL = 300


async def move(url: str, committed: list[int], enough: asyncio.Event) -> None:
    """Move one unit from A to B or back until the server stops answering."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while True:
            try:
                read = await client.post(
                    "/txn", json={"ops": [{"op": "get", "key": A}, {"op": "get", "key": B}]}
                )
                if read.status_code != 200:
                    return
                a, b = read.json()["results"]
                amount = 1 if a["value"] > TOTAL // 2 else -1
                ops: list[dict[str, Any]] = [
                    {"op": "put", "key": A, "value": a["value"] - amount,
                     "if_revision": a["revision"]},
                    {"op": "put", "key": B, "value": b["value"] + amount,
                     "if_revision": b["revision"]},
                ]  # fmt: skip
                moved = await client.post("/txn", json={"ops": ops})
            except httpx.TransportError:
                return
            if moved.status_code == 200:
                committed.append(1)
                if len(committed) >= MOVES_BEFORE_THE_KILL:
                    enough.set()
            elif moved.status_code != 409:  # 503: the backend is gone
                return


async def load_and_kill(url: str, kill: Any) -> int:
    committed: list[int] = []
    enough = asyncio.Event()
    movers = [asyncio.create_task(move(url, committed, enough)) for _ in range(8)]
    await asyncio.wait_for(enough.wait(), 60)
    kill()  # while the movers' transactions are on their way
    await asyncio.gather(*movers)
    return len(committed)


@pytest.mark.parametrize("backend", FAULT_BACKENDS)
def test_a_kill_during_transactions_leaves_each_whole_or_absent(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = private_server(request, backend)
    kv = start_kv(tmp_path, kv_environment(backend, server.settings(), backend_timeout=1))
    try:
        with httpx.Client(base_url=kv.url, timeout=10) as client:
            assert client.post("/kv", json={"key": A, "value": TOTAL}).status_code == 200
            assert client.post("/kv", json={"key": B, "value": 0}).status_code == 200
        committed = asyncio.run(load_and_kill(kv.url, server.kill))
        server.start()
        wait_until_ready(kv.url)
        with httpx.Client(base_url=kv.url, timeout=10) as client:
            a, b = client.post(
                "/txn", json={"ops": [{"op": "get", "key": A}, {"op": "get", "key": B}]}
            ).json()["results"]
    finally:
        stop_kv(kv)
    assert a["value"] + b["value"] == TOTAL, (a, b)
    assert a["revision"] == b["revision"], (a, b)  # both written by every transaction
    if backend == "tarantool":
        assert a["revision"] >= 1 + committed  # and every acknowledged one survived
