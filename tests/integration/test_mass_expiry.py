"""100,000 keys expiring at once, through `kv serve` on every backend (#14): every one is
gone from its expiry (404, not listed), the backend reclaims them all within 60 s, and the
latency of other requests while they expire is reported beside the latency without them.

The keys are written by transactions of 128 creates (a `{tag}` per transaction: one slot on
Redis Cluster), each with the ttl (at least 1 s) that makes them all expire at one instant,
EXPIRE_AFTER seconds after the writing began; GETs of another key are timed from just
before that instant until the reclaiming is done or EXPIRY_WINDOW has passed.
"""

import asyncio
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from kv.container import Settings
from tests.contract.conftest import Stored, _tarantool_stored, redis_stored
from tests.integration.test_serve import start_kv, stop_kv
from tests.integration.workload import LIVE_BACKENDS, kv_environment

pytestmark = pytest.mark.slow

KEYS = 100_000
BATCH = 128
RECLAIM_SECONDS = 60.0
EXPIRE_AFTER = 10.0  # seconds from the first write (the writing takes ~2-6 s here)
EXPIRY_WINDOW = 4.0


def storage(backend: str, settings: dict[str, Any], url: str) -> Stored:
    """What the backend still holds under a prefix (memory: its key count, by /metrics)."""
    if backend == "memory":

        async def in_memory(_: str) -> list[str]:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                text = (await client.get("/metrics")).text
            line = next(line for line in text.splitlines() if line.startswith("kv_memory_keys"))
            return ["?"] * int(float(line.split()[1]) - 1)  # all but the probe key

        return in_memory
    cluster = backend == "redis_cluster"
    fields = {**settings, "backend": backend.partition("_")[0], "redis_cluster": cluster}
    live = Settings(**fields)
    return _tarantool_stored(live) if backend == "tarantool" else redis_stored(live)


async def latencies(client: httpx.AsyncClient, until: asyncio.Event) -> list[float]:
    """GETs of one other key, one after another, until `until` is set: their seconds."""
    taken: list[float] = []
    while not until.is_set():
        started = time.perf_counter()
        assert (await client.get("/kv/probe")).status_code == 200
        taken.append(time.perf_counter() - started)
    return taken


def p99(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=100)[98] * 1000


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
async def test_a_hundred_thousand_keys_expire_are_reclaimed_and_others_are_served(
    backend: str, backend_settings: dict[str, Any], tmp_path: Path
) -> None:
    kv = start_kv(tmp_path, kv_environment(backend, backend_settings, log_level="WARNING"))
    prefix = f"mass-{uuid.uuid4().hex[:8]}/"
    try:
        async with httpx.AsyncClient(base_url=kv.url, timeout=30) as client:
            assert (await client.post("/kv", json={"key": "probe", "value": 1})).is_success
            quiet = asyncio.Event()
            baseline = asyncio.create_task(latencies(client, quiet))
            await asyncio.sleep(2)
            quiet.set()
            before = await baseline

            at = time.monotonic() + EXPIRE_AFTER  # when every key expires
            for first in range(0, KEYS, BATCH):
                tag = f"{prefix}{{b{first // BATCH}}}/"
                ttl = round(max(1.0, at - time.monotonic()), 3)
                ops = [
                    {"op": "create", "key": f"{tag}{n}", "value": n, "ttl": ttl}
                    for n in range(first, min(first + BATCH, KEYS))
                ]
                response = await client.post("/txn", json={"ops": ops})
                assert response.status_code == 200, response.text
            await asyncio.sleep(max(0.0, at - 0.5 - time.monotonic()))
            expiring = asyncio.Event()
            during = asyncio.create_task(latencies(client, expiring))
            await asyncio.sleep(EXPIRY_WINDOW)  # the backend sweeps while this client reads
            expiring.set()
            meanwhile = await during

            listed = await client.get("/kv", params={"prefix": prefix, "limit": 10})
            assert listed.json() == {"items": [], "next": None}
            for n in range(0, KEYS, KEYS // 50):
                tag = f"{prefix}{{b{n // BATCH}}}/"
                assert (await client.get(f"/kv/{tag}{n}")).status_code == 404

        stored = storage(backend, backend_settings, kv.url)
        reclaimed_by = time.monotonic() + RECLAIM_SECONDS
        while left := await stored(prefix):
            assert time.monotonic() < reclaimed_by, f"{len(left)} still stored after 60 s"
            await asyncio.sleep(1)
    finally:
        stop_kv(kv)
    print(
        f"\n{backend}: GET p99 {p99(before):.1f} ms without expiring keys, "
        f"{p99(meanwhile):.1f} ms while 100,000 keys expired at once"
    )
