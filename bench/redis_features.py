"""What listing, expiry, transactions and the change feed cost on Redis, at the repository.

No HTTP: the adapter as the service calls it, against servers this script starts itself (the
shipped redis.conf, a standalone server and a 3-master Cluster, on free ports, stopped at the
end). Prints one table per measurement.

    .venv/bin/python bench/redis_features.py                  # everything (~10 minutes)
    .venv/bin/python bench/redis_features.py listing writes   # some sections
    options: [--rounds 5] [--seconds 3] [--keys 1000000] [--cluster-keys 100000]

- listing: a 100-key page (keys only, and with values) from 10,000 and --keys keys on
  standalone Redis, 10,000 and --cluster-keys on the Cluster; time per page over many pages
  from random cursors.
- writes: create (new keys) and replace (overwrite) throughput through this checkout's
  adapter against the single-key one of a6ecbd0, the last main before listing, expiry, watch
  and transactions (its redis.py taken from git), alternating rounds in one process; the
  ratio is the cost of the index upkeep, expiry bookkeeping and publication together.
- txn: a 10-operation transaction (10 puts of one {tag}) against 10 single replaces.
- publish: replace throughput with the change publication against without it (a bench-only
  switch of the scripts), nobody subscribed.

Throughput: 64 concurrent callers, each awaiting one call after the other, for --seconds per
round; medians of the rounds, and the ratio of the medians.
"""

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.servers

from tests.servers.redis import RedisClusterServer, RedisServer

from kv.adapters.redis import RedisRepository, open_redis_repository
from kv.adapters.redis.layout import Layout
from kv.domain import txn
from kv.domain.model import Key

CALLERS = 64
TIMEOUT = 5.0
SECTIONS = ("listing", "writes", "txn", "publish")


@contextlib.asynccontextmanager
async def branch(url: str, prefix: str, cluster: bool, **options: Any) -> AsyncIterator[Any]:
    async for repository in open_redis_repository(url, prefix, cluster, TIMEOUT, **options):
        yield repository


# The last main with the single-key adapter, one module; main now holds the features.
BEFORE_FEATURES = "a6ecbd0"


@contextlib.asynccontextmanager
async def main_branch(url: str, prefix: str, cluster: bool) -> AsyncIterator[Any]:
    """The single-key Redis adapter (src/kv/adapters/redis.py of BEFORE_FEATURES), from git."""
    git = ["git", "show", f"{BEFORE_FEATURES}:src/kv/adapters/redis.py"]
    source = subprocess.run(git, capture_output=True, text=True, check=True).stdout  # noqa: ASYNC221
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("kv_main_redis", file.name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    async for repository in module.open_redis_repository(url, prefix, cluster, TIMEOUT):
        yield repository


async def throughput(call: Callable[[int], Awaitable[Any]], seconds: float) -> float:
    """Calls per second: CALLERS callers, each making `call(n)` one after the other.

    Also counts them in `throughput.calls` (for Redis's time per call).
    """
    done = 0
    stop = time.monotonic() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        n = offset
        while time.monotonic() < stop:
            await call(n)
            n += CALLERS
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    CALLS[0] = done
    return done / (time.monotonic() - start)


CALLS = [0]


def redis_usec(ports: list[int]) -> float:
    """The CPU time Redis's main thread has used so far, every node (microseconds)."""
    total = 0.0
    for port in ports:
        with redis.Redis(port=port) as client:
            cpu = client.info("cpu")
            total += cpu["used_cpu_sys_main_thread"] + cpu["used_cpu_user_main_thread"]
    return total * 1e6


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


# --- listing ----------------------------------------------------------------------------------


def load(url: str, cluster: bool, prefix: str, count: int) -> list[str]:
    """`count` records as kv writes them (record string and index entry), written in bulk;
    the marker says the index is complete. Their keys, sorted."""
    layout = Layout(prefix, cluster=cluster)
    client: Any = (
        redis.RedisCluster.from_url(url, decode_responses=True)
        if cluster
        else redis.Redis.from_url(url, decode_responses=True)
    )
    keys = [f"bench/{i:07d}" for i in range(count)]
    for start in range(0, count, 5000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 5000]:
            record = layout.record(key)
            pipe.set(record, f'1:{{"n":{len(key)},"s":"some text"}}')
            pipe.zadd(layout.structures(layout.tag_of(record))[0], {key: 0})
        pipe.execute()
    client.set(layout.marker, "2")
    client.close()
    return keys


async def pages(repository: RedisRepository, keys: list[str], values: bool, n: int) -> list[float]:
    """Milliseconds per 100-key page, from `n` random cursors."""
    times = []
    for _ in range(n):
        after = random.choice(keys[:-200])
        start = time.perf_counter()
        page = await repository.list("", after=after, limit=100, values=values)
        times.append((time.perf_counter() - start) * 1000)
        assert len(page.entries) == 100
    return times


async def listing(
    args: argparse.Namespace, single: RedisServer, cluster: RedisClusterServer
) -> None:
    rows = []
    single_url = f"redis://127.0.0.1:{single.port}/0"
    cluster_url = f"redis://127.0.0.1:{cluster.nodes[0].port}"
    ports = {single_url: [single.port], cluster_url: [node.port for node in cluster.nodes]}
    cases = [
        ("standalone", single_url, False, 10_000),
        ("standalone", single_url, False, args.keys),
        ("Cluster", cluster_url, True, 10_000),
        ("Cluster", cluster_url, True, args.cluster_keys),
    ]
    for name, url, is_cluster, count in cases:
        prefix = f"list{count}:"
        started = time.monotonic()
        keys = load(url, is_cluster, prefix, count)
        print(f"loaded {count:,} keys on {name} in {time.monotonic() - started:.0f} s")
        async with branch(url, prefix, is_cluster) as repository:
            await pages(repository, keys, False, 20)  # warm up
            for values in (False, True):
                n = 200 if not is_cluster else 60
                before = redis_usec(ports[url])
                times = await pages(repository, keys, values, n)
                redis_ms = (redis_usec(ports[url]) - before) / n / 1000
                times.sort()
                rows.append(
                    [
                        name,
                        f"{count:,}",
                        "yes" if values else "no",
                        f"{statistics.median(times):.2f}",
                        f"{times[int(len(times) * 0.95)]:.2f}",
                        f"{redis_ms:.2f}",
                    ]
                )
    table(
        "A 100-key page (ms: median and p95 of pages from random cursors, and the CPU time of "
        "Redis's main thread per page, every master together)",
        ["Redis", "keys", "values", "median ms", "p95 ms", "Redis CPU ms"],
        rows,
    )


# --- throughput comparisons -------------------------------------------------------------------


def bound(
    call: Callable[[Any, int, int], Awaitable[Any]], repository: Any, tag: int
) -> Callable[[int], Awaitable[Any]]:
    """`call` on `repository` with `tag` (the variant's number), taking only n."""

    def on(n: int) -> Awaitable[Any]:
        return call(repository, n, tag)

    return on


async def compare(
    args: argparse.Namespace,
    title: str,
    variants: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Any]]],
    workloads: dict[str, Callable[[Any, int, int], Awaitable[Any]]],
    prepare: Callable[[Any, int], Awaitable[None]] | None = None,
) -> None:
    """Alternating rounds of every workload on every variant; medians and their ratio, and
    Redis's CPU time per call (its main thread's, over the round)."""
    results: dict[tuple[str, str], list[float]] = {}
    redis_time: dict[tuple[str, str], list[float]] = {}
    names = list(variants)
    async with contextlib.AsyncExitStack() as stack:
        opened = {
            name: await stack.enter_async_context(open_()) for name, open_ in variants.items()
        }
        for index, repository in enumerate(opened.values()):
            if prepare is not None:
                await prepare(repository, index)
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for workload, call in workloads.items():
                for name in order:
                    before = redis_usec(args.ports)
                    rate = await throughput(
                        bound(call, opened[name], names.index(name)), args.seconds
                    )
                    usec = (redis_usec(args.ports) - before) / max(CALLS[0], 1)
                    results.setdefault((workload, name), []).append(rate)
                    redis_time.setdefault((workload, name), []).append(usec)
                    print(f"round {round_} {workload} {name}: {rate:,.0f}/s, Redis {usec:.1f} us")
    rows = []
    for workload in workloads:
        medians = [statistics.median(results[(workload, name)]) for name in names]
        usecs = [statistics.median(redis_time[(workload, name)]) for name in names]
        rows.append(
            [
                workload,
                *(f"{rate:,.0f}" for rate in medians),
                f"{medians[0] / medians[1]:.3f}",
                *(f"{usec:.1f}" for usec in usecs),
            ]
        )
    header = ["workload", *(f"{name} /s" for name in names), "ratio"]
    table(title, header + [f"Redis CPU us/call {name}" for name in names], rows)


async def writes(args: argparse.Namespace, url: str, cluster: bool, where: str) -> None:
    fresh = itertools.count()  # every create writes a key no call wrote before

    async def create(repository: Any, _n: int, tag: int) -> None:
        await repository.create(Key(f"new/{tag}/{next(fresh)}"), '{"n":1,"s":"some text"}')

    async def replace(repository: Any, n: int, _tag: int) -> None:
        await repository.replace(Key(f"old/{n % 5000}"), '{"n":2,"s":"some text"}')

    async def prepare(repository: Any, _index: int) -> None:
        for start in range(0, 5000, CALLERS):
            await asyncio.gather(
                *(repository.upsert(Key(f"old/{n}"), "0") for n in range(start, start + CALLERS))
            )

    await compare(
        args,
        f"Writes on {where}: this branch's adapter against main's (ratio = branch / main)",
        {
            "branch": lambda: branch(url, "w:", cluster),
            "main": lambda: main_branch(url, "wm:", cluster),
        },
        {"create": create, "replace": replace},
        prepare,
    )


async def transactions(args: argparse.Namespace, url: str, cluster: bool, where: str) -> None:
    async def prepare(repository: Any, _index: int) -> None:
        for i in range(10):  # CALLERS at a time: a Cluster node has 100 connections at most
            await asyncio.gather(
                *(repository.upsert(Key(f"{{t{n}}}/{i}"), "0") for n in range(CALLERS))
            )

    async def transaction(repository: Any, n: int, _tag: int) -> None:
        group = n % CALLERS
        ops = [txn.Put(Key(f"{{t{group}}}/{i}"), '{"n":3}') for i in range(10)]
        await repository.transact(ops)

    async def ten_replaces(repository: Any, n: int, _tag: int) -> None:
        group = n % CALLERS
        for i in range(10):
            await repository.replace(Key(f"{{t{group}}}/{i}"), '{"n":3}')

    async with branch(url, "t:", cluster) as repository:
        await prepare(repository, 0)
        rows = []
        for round_ in range(args.rounds):
            for name, call in (("txn", transaction), ("10 replaces", ten_replaces)):
                rate = await throughput(bound(call, repository, 0), args.seconds)
                rows.append((round_, name, rate))
                print(f"round {round_} {name}: {rate:,.0f}/s")
        txn_rate = statistics.median(rate for _, name, rate in rows if name == "txn")
        single = statistics.median(rate for _, name, rate in rows if name != "txn")
    table(
        f"10 writes on {where}: one transaction against 10 replaces, one after the other",
        ["variant", "batches of 10 /s", "writes /s"],
        [
            ["one 10-operation transaction", f"{txn_rate:,.0f}", f"{txn_rate * 10:,.0f}"],
            ["10 single replaces", f"{single:,.0f}", f"{single * 10:,.0f}"],
            ["ratio", f"{txn_rate / single:.2f}", ""],
        ],
    )


async def publication(args: argparse.Namespace, url: str, cluster: bool, where: str) -> None:
    async def prepare(repository: Any, _index: int) -> None:
        for start in range(0, 5000, CALLERS):
            await asyncio.gather(
                *(repository.upsert(Key(f"p/{n}"), "0") for n in range(start, start + CALLERS))
            )

    async def replace(repository: Any, n: int, _tag: int) -> None:
        await repository.replace(Key(f"p/{n % 5000}"), '{"n":2,"s":"some text"}')

    await compare(
        args,
        f"Replace on {where}, nobody subscribed: with change publication against without "
        "(ratio = with / without)",
        {
            "with": lambda: branch(url, "p:", cluster),
            "without": lambda: branch(url, "p:", cluster, publish=False),
        },
        {"replace": replace},
        prepare,
    )


async def run(args: argparse.Namespace, single: RedisServer, cluster: RedisClusterServer) -> None:
    single_url = f"redis://127.0.0.1:{single.port}/0"
    cluster_url = f"redis://127.0.0.1:{cluster.nodes[0].port}"
    targets = [(single_url, False, "standalone Redis"), (cluster_url, True, "a 3-master Cluster")]
    if "listing" in args.sections:
        await listing(args, single, cluster)
    for url, is_cluster, where in targets:
        args.ports = [node.port for node in cluster.nodes] if is_cluster else [single.port]
        if "writes" in args.sections:
            await writes(args, url, is_cluster, where)
        if "txn" in args.sections:
            await transactions(args, url, is_cluster, where)
        if "publish" in args.sections:
            await publication(args, url, is_cluster, where)


def pin(single: RedisServer, cluster: RedisClusterServer) -> None:
    """This process on CPU 0, the Redis servers on CPU 1 (as `make bench` pins the app and
    its backend), so that they take turns on the same core less often."""
    if len(os.sched_getaffinity(0)) < 2:
        return
    os.sched_setaffinity(0, {0})
    for node in [single.node, *cluster.nodes]:
        assert node.process is not None
        os.sched_setaffinity(node.process.pid, {1})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--cluster-keys", type=int, default=100_000)
    args = parser.parse_args()
    args.sections = args.sections or list(SECTIONS)
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"no section {', '.join(sorted(unknown))}; there are {', '.join(SECTIONS)}")
    with tempfile.TemporaryDirectory() as directory:
        single = RedisServer(Path(directory) / "redis")
        cluster = RedisClusterServer(Path(directory) / "cluster")
        try:
            single.start()
            cluster.create()
            pin(single, cluster)
            asyncio.run(run(args, single, cluster))
        finally:
            single.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
