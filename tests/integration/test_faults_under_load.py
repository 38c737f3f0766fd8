"""The backend fails under load; `kv serve` keeps answering, and recovers by itself.

8 clients create, overwrite and read 3 keys through a real `kv serve` (KV_BACKEND_TIMEOUT=1)
while the backend is killed (SIGKILL) and restarted on the same data, or frozen (SIGSTOP) and
thawed. Throughout:
- every request gets an answer (kv itself never drops a connection), and it is a 2xx, a 4xx
  or a 503 with Retry-After: never a 500;
- no answer takes longer than the backend timeout plus a margin;
- the outage is visible (503s), and success resumes after the restart without restarting kv;
- every write acknowledged with 200 is readable afterwards, at its revision or a later one
  (and with its value when at its revision); on Redis, except those acknowledged in the few
  seconds before a kill -9, which Redis may not yet have handed to the kernel (see
  WRITE_BACK_SECONDS).
With `--soak` (or KV_SOAK=1): three outages per run, and a graceful stop (SIGTERM) as well.
"""

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.integration.backends import (
    FAULT_BACKENDS,
    WRITE_BACK_SECONDS,
    BackendServer,
    private_server,
)
from tests.integration.workload import Run, kv_environment, run_clients
from tests.linearizability import canonical
from tests.servers.kv import start_kv, stop_kv

pytestmark = pytest.mark.slow

BACKEND_TIMEOUT = 1.0
MARGIN = 4.0  # for a loaded 2-core machine: answers come within BACKEND_TIMEOUT + MARGIN
OUTAGE_SECONDS = 2.0
RECOVERY_SECONDS = 30.0
WARM_UP_ANSWERS = 200


Action = Callable[[], None]


def faults(server: BackendServer, soak: bool) -> dict[str, tuple[Action, Action]]:
    """name -> (how to break the backend, how to bring it back)."""
    chosen: dict[str, tuple[Action, Action]] = {"kill": (server.kill, server.start)}
    pause, resume = getattr(server, "pause", None), getattr(server, "resume", None)
    if pause is not None and resume is not None:
        chosen["pause"] = (pause, resume)
    if soak:
        chosen["stop"] = (server.stop, server.start)
    return chosen


async def wait_for(run: Run, predicate: Callable[[Run], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate(run):
        assert time.monotonic() < deadline, f"{what} within {seconds} s: {run.statuses()}"
        await asyncio.sleep(0.05)


def answered_since(moment: float, status: int) -> Callable[[Run], bool]:
    """Whether a request sent after `moment` got `status`."""
    return lambda run: any(
        a.status == status and a.operation.invoked > moment for a in list(run.answers)
    )


async def load_through_outages(
    url: str, keys: list[str], breaks: list[tuple[str, Action, Action]]
) -> tuple[Run, list[tuple[str, float, float, float]]]:
    """Run the load through each (name, break, repair) in turn; the run, and for each outage
    its name, when the break began and ended, and when the repair ended."""
    done = asyncio.Event()
    run = Run()
    load = asyncio.create_task(
        run_clients(
            url,
            keys,
            clients=8,
            until=done,
            kinds=("create", "overwrite", "get"),
            request_timeout=60.0,
            into=run,
        )
    )
    outages = []
    try:
        await wait_for(run, lambda r: len(r.answers) >= WARM_UP_ANSWERS, 60, "no load")
        for name, fault, repair in breaks:
            broken = time.monotonic()
            # In threads: they wait for the process, and the load must go on meanwhile.
            await asyncio.to_thread(fault)
            faulted = time.monotonic()
            unavailable = answered_since(broken, 503)
            await wait_for(run, unavailable, BACKEND_TIMEOUT + MARGIN + 10, "no 503 in the outage")
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(repair)
            repaired = time.monotonic()
            outages.append((name, broken, faulted, repaired))
            await wait_for(run, answered_since(repaired, 200), RECOVERY_SECONDS, "no recovery")
            await asyncio.sleep(1.0)
    finally:
        done.set()
        await load
    return run, outages


@pytest.mark.parametrize("backend", FAULT_BACKENDS)
def test_a_backend_killed_or_frozen_under_load_gives_503s_then_recovers_losing_nothing(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, soak: bool
) -> None:
    server = private_server(request, backend)
    environ = kv_environment(backend, server.settings(), backend_timeout=BACKEND_TIMEOUT)
    kv = start_kv(tmp_path, environ)
    keys = [f"{uuid.uuid4().hex[:8]}/fault {n}" for n in range(3)]
    chosen = faults(server, soak)
    rounds = 3 if soak else 1
    breaks = [
        (name, fault, repair) for name, (fault, repair) in chosen.items() for _ in range(rounds)
    ]
    try:
        run, outages = asyncio.run(load_through_outages(kv.url, keys, breaks))
        final = read_back(kv.url, keys)
    finally:
        stop_kv(kv)

    lost = [a for a in run.answers if a.status is None]
    assert not lost, f"kv dropped {len(lost)} requests, e.g. {lost[0].error}"
    assert not run.unexpected(), [(a.status, a.error) for a in run.unexpected()[:5]]
    slow = [a for a in run.answers if a.latency > BACKEND_TIMEOUT + MARGIN]
    assert not slow, f"{len(slow)} answers took over {BACKEND_TIMEOUT + MARGIN} s: {slow[:3]}"
    for _, broken, _, repaired in outages:
        during = [a for a in run.answers if broken <= a.operation.invoked <= repaired]
        assert any(a.status == 503 for a in during)
    assert "unhandled error" not in kv.log.read_text()  # what a 500 logs

    # Every acknowledged write is there after the restarts, at its revision or later: those
    # the backend may still have held in memory when it was killed excepted.
    window = WRITE_BACK_SECONDS[backend]
    kills = [(broken, faulted) for name, broken, faulted, _ in outages if name == "kill"]
    durable = [
        op
        for op in run.acknowledged_writes()
        if not any(start - window <= (op.returned or 0) <= end for start, end in kills)
    ]
    for key in keys:
        acked = [op for op in durable if op.key == key]
        if not acked:
            continue
        newest = max(acked, key=lambda op: op.revision or 0)
        status, revision, value = final[key]
        assert status == 200, f"{key}: acknowledged up to revision {newest.revision}, now gone"
        assert revision is not None and newest.revision is not None
        assert revision >= newest.revision, (
            f"{key}: acknowledged revision {newest.revision}, read back {revision}"
        )
        if revision == newest.revision:
            assert value == canonical(newest.value)


def read_back(url: str, keys: list[str]) -> dict[str, tuple[int, int | None, str | None]]:
    """Each key's status, revision and value (canonical JSON), read through kv."""
    found: dict[str, tuple[int, int | None, str | None]] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for key in keys:
            response = client.get("/kv/" + quote(key, safe="/"))
            if response.status_code == 200:
                body = response.json()
                found[key] = (200, body["revision"], canonical(body["value"]))
            else:
                found[key] = (response.status_code, None, None)
    return found
