"""kv's bulk operations under wrk, kv alone (the floors have no such operations): a listing
page, a 10-operation transaction against 10 single PUTs, and PUT with 0, 10 and 100
watchers on the written prefix (bench/watchers.py, in a process beside wrk)."""

import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
from load import Sample, median_sample, wrk
from processes import LOAD_CPU, ROOT, Server, stop
from workloads import VALUE, Workload

from kv.entrypoints.listing import encode_cursor

LIST_PREFIX = "list/"
LIST_KEYS = 100_000
TXN_BATCH = 128  # the most operations a transaction may have
TXN_GROUPS = 100  # a transaction writes the 10 keys t/<group>/0..9 of one group
WATCHED_KEYS = 100  # PUTs go round w/0 .. w/99, under the watched prefix w/
WATCHED = [f"w/{i}" for i in range(WATCHED_KEYS)]
RECORD = f'{{"value":{VALUE}}}'  # a PUT's body
WATCHER_COUNTS = (0, 10, 100)
T = TypeVar("T")


@dataclass
class Watched:
    """PUTs with some watchers: wrk's sample and what the watchers received."""

    sample: Sample
    events_per_s: float  # counted by the watchers while wrk ran
    delivered: float  # events received by the end ÷ (PUTs committed x watchers)
    overflows: int  # watchers that kv ended because they fell behind
    unavailable: int


@dataclass
class NewOps:
    list_keys: int  # under LIST_PREFIX
    store_keys: int = 0  # in the whole store when the measurements started
    listing: list[Sample] = field(default_factory=list)
    txn: list[Sample] = field(default_factory=list)
    puts: list[Sample] = field(default_factory=list)
    watched: dict[int, list[Watched]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _lua_cycle(paths: list[str], method: str = "GET", bodies: list[str] | None = None) -> str:
    """A wrk script: request i is `method` of paths[i mod len] with bodies[i mod len]."""
    path_list = ",\n".join(json.dumps(path) for path in paths)
    body_list = ",\n".join(json.dumps(body) for body in bodies or [])
    return f"""
paths = {{{path_list}}}
bodies = {{{body_list}}}
counter = 0
request = function()
  counter = counter + 1
  local body = nil
  if #bodies > 0 then body = bodies[counter % #bodies + 1] end
  return wrk.format({json.dumps(method)}, paths[counter % #paths + 1], nil, body)
end
"""


def _create_ops(keys: list[str]) -> str:
    ops = ",".join(f'{{"op":"create","key":"{key}","value":{VALUE}}}' for key in keys)
    return f'{{"ops":[{ops}]}}'


def load(client: httpx.Client, keys: list[str]) -> None:
    """Create `keys` through POST /txn, TXN_BATCH at a time; a batch already there (a
    persistent backend, a second round) answers 409 `exists` and is left as it is."""
    for start in range(0, len(keys), TXN_BATCH):
        answer = client.post("/txn", content=_create_ops(keys[start : start + TXN_BATCH]))
        if answer.status_code == 409 and answer.json().get("reason") == "exists":
            continue
        answer.raise_for_status()


def count_keys(client: httpx.Client) -> int:
    count, cursor = 0, None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = client.get("/kv", params=params).raise_for_status().json()
        count += len(page["items"])
        if (cursor := page["next"]) is None:
            return count


@contextlib.contextmanager
def watchers(port: int, count: int) -> Iterator[subprocess.Popen[str]]:
    command = ["taskset", "-c", LOAD_CPU, sys.executable, str(ROOT / "bench" / "watchers.py")]
    command += ["--port", str(port), "--prefix", "w/", "--count", str(count)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{count} watchers did not get ready")
        yield process
    finally:
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.write("quit\n")
            process.stdin.flush()
        stop(process)


@contextlib.contextmanager
def watching(server: Server, count: int) -> Iterator[None]:
    """The WATCHED_KEYS keys w/* created, and `count` watchers reading w/ meanwhile."""
    with httpx.Client(base_url=server.url) as client:
        load(client, WATCHED)
    with watchers(server.port, count) if count else contextlib.nullcontext():
        yield


def _counts(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write("count\n")
    process.stdin.flush()
    return dict(json.loads(process.stdout.readline()))


def watched_puts(
    server: Server, count: int, put: Workload, duration: int, workdir: Path
) -> Watched:
    if count == 0:
        return Watched(wrk(server.url, put, duration, workdir), 0.0, 1.0, 0, 0)
    with watchers(server.port, count) as process, httpx.Client(base_url=server.url) as client:
        written = _revisions(client)
        before = _counts(process)
        sample = wrk(server.url, put, duration, workdir)
        during = _counts(process)
        time.sleep(0.5)  # the PUTs wrk left in flight
        # Every PUT committed adds one to a revision: exactly the events each watcher is owed.
        expected = (_revisions(client) - written) * count
        deadline = time.monotonic() + 5
        after = during
        while after["put"] - before["put"] < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            after = _counts(process)
    return Watched(
        sample,
        (during["put"] - before["put"]) / duration,
        (after["put"] - before["put"]) / expected if expected else 1.0,
        after["overflow"],
        after["unavailable"],
    )


def _revisions(client: httpx.Client) -> int:
    """The sum of the revisions of the watched keys."""
    page = client.get("/kv", params={"prefix": "w/", "limit": "1000"}).raise_for_status().json()
    assert len(page["items"]) == WATCHED_KEYS, len(page["items"])
    return sum(int(item["revision"]) for item in page["items"])


def bench_new_ops(
    server: Server, rounds: int, duration: int, workdir: Path, *, list_keys: int = LIST_KEYS
) -> NewOps:
    """Load the keys, then `rounds` rounds of every measurement, the watcher counts rotated."""
    result = NewOps(list_keys=list_keys)
    groups = [[f"t/{g}/{i}" for i in range(10)] for g in range(TXN_GROUPS)]
    txn_keys = [key for group in groups for key in group]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.monotonic()
        load(client, [f"{LIST_PREFIX}{i:07d}" for i in range(list_keys)] + txn_keys + WATCHED)
        print(f"  loaded {list_keys:,} keys in {time.monotonic() - started:.1f} s", flush=True)
        result.store_keys = count_keys(client)
        pages = _pages(list_keys)
        first = client.get(pages[1]).raise_for_status().json()
        assert len(first["items"]) == 100, first
    txn_bodies = [
        '{"ops":[' + ",".join(f'{{"op":"put","key":"{k}","value":{VALUE}}}' for k in g) + "]}"
        for g in groups
    ]
    listing = Workload("listing", pages[0], _lua_cycle(pages))
    txn = Workload("txn", "/txn", _lua_cycle(["/txn"], "POST", txn_bodies))
    puts = Workload("puts", "/kv", _lua_cycle([f"/kv/{k}" for k in txn_keys], "PUT", [RECORD]))
    watched_put = put_watched()
    for round_ in range(rounds):
        _measure(
            result, "listing", partial(wrk, server.url, listing, duration, workdir), result.listing
        )
        _measure(result, "txn", partial(wrk, server.url, txn, duration, workdir), result.txn)
        _measure(result, "puts", partial(wrk, server.url, puts, duration, workdir), result.puts)
        for count in WATCHER_COUNTS[round_ % 3 :] + WATCHER_COUNTS[: round_ % 3]:
            run = partial(watched_puts, server, count, watched_put, duration, workdir)
            _measure(result, f"{count} watchers", run, result.watched.setdefault(count, []))
        print(f"  new operations, round {round_}: {summary(result)}", flush=True)
    return result


def put_watched() -> Workload:
    """PUTs round the WATCHED_KEYS keys w/0 .. w/99."""
    return Workload("watched", "/kv", _lua_cycle([f"/kv/{k}" for k in WATCHED], "PUT", [RECORD]))


def _pages(list_keys: int) -> list[str]:
    """The first page of LIST_PREFIX, then 1000 pages from random keys of it (cursors)."""
    rng = random.Random(19)
    first = f"/kv?prefix={LIST_PREFIX}&limit=100"
    starts = [f"{LIST_PREFIX}{rng.randrange(list_keys - 200):07d}" for _ in range(1000)]
    return [first] + [f"{first}&cursor={encode_cursor(LIST_PREFIX, key)}" for key in starts]


def _measure(result: NewOps, name: str, run: Callable[[], T], into: list[T]) -> None:
    """Run one measurement; a backend that lacks the operation is noted, not fatal."""
    if name in result.failures:
        return
    try:
        into.append(run())
    except (
        subprocess.CalledProcessError,
        RuntimeError,
        OSError,
        AssertionError,
        httpx.HTTPError,
    ) as exc:
        result.failures[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        print(f"    {name} failed: {result.failures[name]}", flush=True)


def summary(result: NewOps) -> str:
    parts = []
    if result.listing:
        parts.append(f"listing {result.listing[-1].rps:,.0f} pages/s")
    if result.txn:
        parts.append(f"txn {result.txn[-1].rps:,.0f}/s")
    if result.puts:
        parts.append(f"PUT {result.puts[-1].rps:,.0f}/s")
    for count, runs in result.watched.items():
        if runs:
            parts.append(f"{count} watchers {runs[-1].sample.rps:,.0f} PUT/s")
    return ", ".join(parts)


def median_watched(runs: list[Watched]) -> Watched:
    return Watched(
        median_sample([r.sample for r in runs]),
        statistics.median(r.events_per_s for r in runs),
        min(r.delivered for r in runs),
        sum(r.overflows for r in runs),
        sum(r.unavailable for r in runs),
    )
