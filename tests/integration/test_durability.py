"""Acknowledged writes survive a crash of the backend process.

With the backend run from its shipped configuration (deploy/tarantool/init.lua: the WAL in
`wal_mode = 'write'`; deploy/redis/redis.conf: the append-only file, `appendfsync
everysec`), 8 concurrent clients make 1000 writes through a real `kv serve` (creates of fresh
keys, then overwrites of some), all acknowledged with 200. The backend is then killed with
SIGKILL, restarted on the same directory, and every write is read back through the same
`kv serve` (which reconnects by itself): none may be lost.

What this shows is that a *process* crash loses nothing the backend has handed to the kernel
(write(2)). Tarantool does that before it acknowledges, so it is killed at once. Redis
(`everysec`) does too, except while a slow fsync makes it hold its AOF buffer back (up to
2 s), so it is killed once it reports that buffer empty; the faults test allows for that
window. Nor does it show survival of an OS crash or a power loss, which would lose what the
kernel had not yet put on disk (see README, Guarantees). With `--soak` (or KV_SOAK=1): 20000
writes.
"""

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.integration.backends import FAULT_BACKENDS, private_server, wait_until_written
from tests.integration.workload import kv_environment
from tests.servers.kv import start_kv, stop_kv

pytestmark = pytest.mark.slow

CLIENTS = 8
RECOVERY_SECONDS = 30.0


async def write_all(url: str, writes: int) -> dict[str, tuple[int, Any]]:
    """At least `writes` acknowledged writes from CLIENTS clients: 4/5 of them create fresh
    keys, then each client overwrites every fourth key it created. Returns each key's last
    acknowledged (revision, value)."""
    prefix = uuid.uuid4().hex[:8]
    keys = [f"{prefix}/durable {n}" for n in range(writes * 4 // 5)]
    acknowledged: dict[str, tuple[int, Any]] = {}

    async def client(number: int) -> None:
        mine = keys[number::CLIENTS]
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for key in mine:
                value = {"key": key, "n": 1}
                response = await http.post("/kv", json={"key": key, "value": value})
                assert response.status_code == 200, response.text
                acknowledged[key] = (response.json()["revision"], value)
            for key in mine[::4]:
                value = {"key": key, "n": 2}
                response = await http.put("/kv/" + quote(key, safe="/"), json={"value": value})
                assert response.status_code == 200, response.text
                acknowledged[key] = (response.json()["revision"], value)

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    assert sum(revision for revision, _ in acknowledged.values()) >= writes
    return acknowledged


def wait_until_ready(url: str) -> None:
    deadline = time.monotonic() + RECOVERY_SECONDS
    with httpx.Client(base_url=url, timeout=10) as client:
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "kv did not reconnect to the restarted backend"
            time.sleep(0.1)


@pytest.mark.parametrize("backend", FAULT_BACKENDS)
def test_no_acknowledged_write_is_lost_when_the_backend_is_killed(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, soak: bool
) -> None:
    writes = 20_000 if soak else 1000
    server = private_server(request, backend)
    kv = start_kv(tmp_path, kv_environment(backend, server.settings()))
    try:
        acknowledged = asyncio.run(write_all(kv.url, writes))
        # What a kill -9 must not lose is what the backend has handed to the kernel: at once
        # for Tarantool; for Redis, once its AOF buffer is empty (see WRITE_BACK_SECONDS).
        wait_until_written(server)
        server.kill()
        server.start()
        wait_until_ready(kv.url)
        lost = []
        with httpx.Client(base_url=kv.url, timeout=30) as client:
            for key, (revision, value) in acknowledged.items():
                response = client.get("/kv/" + quote(key, safe="/"))
                if response.status_code != 200:
                    lost.append((key, revision, response.status_code))
                    continue
                body = response.json()
                if (body["revision"], body["value"]) != (revision, value):
                    lost.append((key, revision, body))
    finally:
        stop_kv(kv)
    assert not lost, f"{len(lost)} of {writes} acknowledged writes lost, e.g. {lost[:3]}"
