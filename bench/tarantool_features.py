"""Tarantool's listing, writes, transactions and expiry, measured through the repository
(no HTTP), each on an instance of its own started from init.lua in a temporary directory.

    .venv/bin/python bench/tarantool_features.py                  # everything (~5 minutes)
    .venv/bin/python bench/tarantool_features.py --only page,writes --keys 100000
    options: [--only page,writes,txn,expiry] [--keys 1000000] [--rounds 21] [--duration 1]
             [--against REV]

- page: a 100-key page (keys only, and with values) from 10,000 keys, then from `--keys`;
- writes: create + replace throughput and Tarantool's CPU per write, this checkout's adapter
  and init.lua against those of `--against` (default a6ecbd0, the last main before listing,
  expiry, watch and transactions; taken with `git show REV:...`), in alternating rounds,
  compared round by round;
- txn: a 10-operation transaction against 10 replaces, one after another and all at once;
- expiry: gets' latency while 100,000 keys with a 1 s ttl expire at once, against without,
  how soon they are all deleted, and how late watchers hear of them.
"""

import argparse
import asyncio
import importlib.util
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import asynctnt

from kv.adapters.tarantool import open_tarantool_repository
from kv.domain import txn
from kv.domain.model import Key

ROOT = Path(__file__).resolve().parents[1]
INIT_LUA = ROOT / "deploy" / "tarantool" / "init.lua"
MEMTX_MEMORY = str(2 * 1024**3)  # room for a million keys whatever the slab classes
TIMEOUT = 10.0
USER = PASSWORD = "kv"  # noqa: S105 (init.lua's defaults)
CLK_TCK = os.sysconf("SC_CLK_TCK")

Repository = Any  # this checkout's TarantoolRepository, or the one of --against


TARANTOOL_VERSION = subprocess.run(
    ["tarantool", "--version"], capture_output=True, text=True, check=True
).stdout.splitlines()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Instance:
    """`tarantool <instance file>` on a free port in a directory of its own."""

    def __init__(self, instance_file: Path, directory: Path) -> None:
        self.port = free_port()
        env = {name: value for name, value in os.environ.items() if not name.startswith("KV_")}
        env |= {
            "KV_TARANTOOL_LISTEN": f"127.0.0.1:{self.port}",
            "KV_TARANTOOL_WORK_DIR": str(directory),
            "KV_TARANTOOL_MEMTX_MEMORY": MEMTX_MEMORY,
        }
        directory.mkdir(parents=True)
        executable = shutil.which("tarantool")
        assert executable, "tarantool is not installed"
        with (directory / "tarantool.log").open("wb") as log:
            self.process = subprocess.Popen(
                [executable, str(instance_file)], cwd=directory, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "tarantool did not start"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# The last main with the single-key adapter (one module, src/kv/adapters/tarantool.py).
BEFORE_FEATURES = "a6ecbd0"


def main_branch_file(path: str, directory: Path, revision: str) -> Path:
    text = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    target = directory / Path(path).name
    target.write_text(text)
    return target


def main_adapter(directory: Path, revision: str) -> ModuleType:
    """The adapter of `revision`, which must still be one module."""
    source = main_branch_file("src/kv/adapters/tarantool.py", directory, revision)
    spec = importlib.util.spec_from_file_location("kv_main_tarantool", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def opened(
    opener: Callable[..., AsyncIterator[Repository]], url: str
) -> AbstractAsyncContextManager[Repository]:
    return asynccontextmanager(opener)(url, "kv", TIMEOUT)


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """Median, p99 and maximum, in milliseconds, of durations in seconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e3, p99 * 1e3, ordered[-1] * 1e3


async def in_chunks(calls: list[Callable[[], Awaitable[Any]]], size: int = 1000) -> None:
    for start in range(0, len(calls), size):
        await asyncio.gather(*(call() for call in calls[start : start + size]))


# --- (a) a page ---------------------------------------------------------------------------


async def bench_page(directory: Path, keys: int) -> None:
    print("\n## A 100-key page (median / p99 ms over 500 pages from random cursors)\n")
    print("| keys stored | keys only | with values |")
    print("|---|---|---|")
    instance = Instance(INIT_LUA, directory / "page")
    try:
        async with opened(open_tarantool_repository, instance.url) as repository:
            stored = 0
            for target in sorted({10_000, keys}):
                await in_chunks(
                    [
                        partial(repository.create, Key(f"k/{i:08d}"), '{"n":1,"s":"text"}')
                        for i in range(stored, target)
                    ]
                )
                stored = target
                row = [f"{target:,}"]
                for values in (False, True):
                    samples = []
                    for _ in range(500):
                        after = f"k/{random.randrange(target - 100):08d}"
                        started = time.perf_counter()
                        page = await repository.list("k/", after=after, limit=100, values=values)
                        samples.append(time.perf_counter() - started)
                        assert len(page.entries) == 100
                    median, p99, _ = quantiles(samples)
                    row.append(f"{median:.2f} / {p99:.2f}")
                print(f"| {' | '.join(row)} |")
    finally:
        instance.stop()


# --- (b) writes: this checkout against --against ----------------------------------------


async def write_round(
    repository: Repository, instance: Instance, tag: str, seconds: float, ttl_ms: int | None
) -> tuple[float, float, float]:
    """Writes/s, and CPU µs per write in Tarantool and in this process (the adapter): 64
    workers, each creating a key and replacing it, for `seconds`."""
    stop = time.monotonic() + seconds
    counts = [0] * 64
    extra = {} if ttl_ms is None else {"ttl_ms": ttl_ms}

    async def worker(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            key = Key(f"{tag}/{n}/{i}")
            await repository.create(key, '{"n":12345,"s":"some text"}', **extra)
            await repository.replace(key, '{"n":12346,"s":"some text"}', **extra)
            counts[n] += 2
            i += 1

    cpu = instance.cpu_seconds()
    own = time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(64)))
    elapsed = time.monotonic() - started
    writes = sum(counts)
    return (
        writes / elapsed,
        (instance.cpu_seconds() - cpu) / writes * 1e6,
        (time.process_time() - own) / writes * 1e6,
    )


async def bench_writes(directory: Path, rounds: int, seconds: float, against: str) -> None:
    old_lua = main_branch_file("deploy/tarantool/init.lua", directory, against)
    old_adapter = main_adapter(directory, against)
    variants = {
        "before": (
            Instance(old_lua, directory / "before"),
            old_adapter.open_tarantool_repository,
            None,
        ),
        "now": (Instance(INIT_LUA, directory / "now"), open_tarantool_repository, None),
        "now, ttl 1 h": (
            Instance(INIT_LUA, directory / "branch-ttl"),
            open_tarantool_repository,
            3_600_000,
        ),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    try:
        async with (
            opened(variants["before"][1], variants["before"][0].url) as main,
            opened(open_tarantool_repository, variants["now"][0].url) as branch,
            opened(open_tarantool_repository, variants["now, ttl 1 h"][0].url) as with_ttl,
        ):
            repositories = {"before": main, "now": branch, "now, ttl 1 h": with_ttl}
            names = list(variants)
            for r in range(rounds):
                order = names if r % 2 == 0 else names[::-1]
                for name in order:
                    instance, _, ttl = variants[name]
                    results[name].append(
                        await write_round(repositories[name], instance, f"r{r}", seconds, ttl)
                    )
    finally:
        for instance, _, _ in variants.values():
            instance.stop()
    print(f"\n## Writes: create + replace, 64 concurrent workers, {rounds} alternating rounds\n")
    print(
        "| adapter and init.lua | writes/s, median | against before in the same round: "
        "writes/s | CPU/write in Tarantool | CPU/write in the adapter |"
    )
    print("|---|---|---|---|---|")

    def paired(name: str, i: int) -> str:
        """The median, over rounds, of `name`'s figure over main's in the same round, and the
        middle half of those ratios: adjacent runs share the machine's other load."""
        ratios = sorted(
            mine[i] / theirs[i]
            for mine, theirs in zip(results[name], results["before"], strict=True)
        )
        low, high = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        return f"{statistics.median(ratios):.3f} ({low:.2f}-{high:.2f})"

    for name, rounds_ in results.items():
        rate = statistics.median(round_[0] for round_ in rounds_)
        tarantool = statistics.median(round_[1] for round_ in rounds_)
        adapter = statistics.median(round_[2] for round_ in rounds_)
        print(
            f"| {name} | {rate:,.0f} | {paired(name, 0)} | {tarantool:.1f} µs, "
            f"{paired(name, 1)} | {adapter:.1f} µs, {paired(name, 2)} |"
        )
    print("\n(ratios: the median of the rounds' ratios, and their middle half in brackets.)")


# --- (c) transactions ---------------------------------------------------------------------


async def bench_txn(directory: Path, seconds: float) -> None:
    instance = Instance(INIT_LUA, directory / "txn")
    print("\n## Ten keys written: one transaction against ten replaces\n")
    print("| how | one client: µs per 10 keys | 16 clients: 10-key units/s |")
    print("|---|---|---|")
    try:
        async with opened(open_tarantool_repository, instance.url) as repository:
            keys = [[Key(f"t/{c}/{i}") for i in range(10)] for c in range(16)]
            await in_chunks([partial(repository.create, k, "0") for ks in keys for k in ks])

            async def transaction(ks: list[Key]) -> None:
                await repository.transact([txn.Put(k, "1") for k in ks])

            async def one_by_one(ks: list[Key]) -> None:
                for k in ks:
                    await repository.replace(k, "1")

            async def all_at_once(ks: list[Key]) -> None:
                await asyncio.gather(*(repository.replace(k, "1") for k in ks))

            for name, unit in (
                ("a 10-operation transaction", transaction),
                ("10 replaces, one after another", one_by_one),
                ("10 replaces at once (one batch)", all_at_once),
            ):
                samples = []
                stop = time.monotonic() + seconds
                while time.monotonic() < stop:
                    started = time.perf_counter()
                    await unit(keys[0])
                    samples.append(time.perf_counter() - started)
                counts = [0] * 16

                async def client(
                    c: int, unit: Callable[[list[Key]], Awaitable[None]], counts: list[int]
                ) -> None:
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        await unit(keys[c])
                        counts[c] += 1

                started = time.monotonic()
                await asyncio.gather(*(client(c, unit, counts) for c in range(16)))
                rate = sum(counts) / (time.monotonic() - started)
                print(f"| {name} | {statistics.median(samples) * 1e6:.0f} | {rate:,.0f} |")
    finally:
        instance.stop()


# --- (d) expiry ---------------------------------------------------------------------------


async def get_latencies(repository: Repository, key: Key, seconds: float) -> list[float]:
    samples: list[float] = []
    stop = time.monotonic() + seconds

    async def reader() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            await repository.get(key)
            samples.append(time.perf_counter() - started)

    await asyncio.gather(*(reader() for _ in range(4)))
    return samples


async def stored(connection: asynctnt.Connection, prefix: str) -> bool:
    """Whether any tuple under `prefix` is still in the space, expired or not."""
    rows = await connection.select("kv", (prefix,), iterator="GE", limit=1)
    return bool(rows) and str(rows[0][0]).startswith(prefix)


async def all_deleted(instance: Instance, expire_at: float) -> float:
    """Seconds from `expire_at` until no tuple under x/ is left, looked at every 20 ms."""
    connection = asynctnt.Connection(
        host="127.0.0.1", port=instance.port, username=USER, password=PASSWORD
    )
    await connection.connect()
    try:
        await asyncio.sleep(expire_at - time.time())
        while await stored(connection, "x/"):
            assert time.time() < expire_at + 60, "keys still stored after 60 s"
            await asyncio.sleep(0.02)
        return time.time() - expire_at
    finally:
        await connection.disconnect()


async def bench_expiry(directory: Path, count: int = 100_000) -> None:
    instance = Instance(INIT_LUA, directory / "expiry")
    try:
        async with opened(open_tarantool_repository, instance.url) as repository:
            key = Key("reader")
            await repository.create(key, '{"n":1}')
            without = await get_latencies(repository, key, 4.0)

            lateness: list[float] = []

            async def watch() -> None:
                while len(lateness) < count:
                    for change in await anext(feed):
                        if change.expired and change.key.startswith("x/"):
                            lateness.append(time.time() - expire_at / 1000)

            # Every key expires at the same instant, at least 1 s after the last was written:
            # the fill's time is estimated from a first 5,000 writes.
            started = time.monotonic()
            await in_chunks([partial(repository.create, Key(f"w/{i}"), "1") for i in range(5000)])
            fill_seconds = (time.monotonic() - started) * count / 5000 * 2
            expire_at = int((time.time() + fill_seconds + 1.0) * 1000)
            written = time.monotonic()

            async def create_expiring(i: int) -> None:
                # The ttl is taken when the write leaves, so that all expire at `expire_at`.
                ttl_ms = expire_at - int(time.time() * 1000)
                await repository.create(Key(f"x/{i:06d}"), '{"n":1}', ttl_ms=ttl_ms)

            await in_chunks([partial(create_expiring, i) for i in range(count)])
            assert time.monotonic() - written < fill_seconds, "filling took too long"
            feed = repository.changes()  # subscribed after the writes, to hear the expiries
            await anext(feed)
            watcher = asyncio.ensure_future(watch())
            deleted = asyncio.ensure_future(all_deleted(instance, expire_at / 1000))
            await asyncio.sleep(expire_at / 1000 - time.time() - 1.0)
            during = await get_latencies(repository, key, 4.0)  # from 1 s before the expiry
            gone = await asyncio.wait_for(deleted, 60)
            await asyncio.wait_for(watcher, 30)
            await feed.aclose()
    finally:
        instance.stop()
    print(
        f"\n## {count:,} keys expiring at one instant, at least 1 s after they were written "
        "(4 readers doing gets)\n"
    )
    print("| gets | median ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for name, samples in (("without expiry", without), ("from 1 s before to 3 s after", during)):
        median, p99, top = quantiles(samples)
        print(f"| {name} | {median:.2f} | {p99:.2f} | {top:.1f} |")
    late = sorted(lateness)
    print(
        f"\nAll deleted {gone:.2f} s after their expiry; watchers heard of them "
        f"{statistics.median(late):.2f} s late at the median, {late[int(len(late) * 0.99)]:.2f} s "
        f"at p99, {late[-1]:.2f} s at most."
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="page,writes,txn,expiry")
    parser.add_argument("--keys", type=int, default=1_000_000)
    # Many short rounds: on a machine shared with other load, rounds next to each other share
    # it, and the ratio of the two is steadier than either figure.
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--against", default=BEFORE_FEATURES, help="the revision to compare with")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"{TARANTOOL_VERSION}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        if "page" in only:
            await bench_page(directory, args.keys)
        if "writes" in only:
            await bench_writes(directory, args.rounds, args.duration, args.against)
        if "txn" in only:
            await bench_txn(directory, max(args.duration, 3.0))
        if "expiry" in only:
            await bench_expiry(directory)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
