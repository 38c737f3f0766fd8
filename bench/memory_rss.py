"""RSS per key of the memory backend: 1M keys with 100-byte values; and what the cyclic GC
still has to walk with them stored.

Loads the keys through KVService (as the HTTP handlers do, minus HTTP) in this process and
reports the growth of the resident set divided by the number of keys, then the objects the
collector tracks and how long a full collection takes (the pause every request in flight
would wait for, #19): stored records are meant to stay out of its reach.

    .venv/bin/python bench/memory_rss.py [--keys 1000000] [--value-bytes 100]
"""

import argparse
import asyncio
import gc
import statistics
import time
from pathlib import Path

from kv.adapters.memory import MemoryRepository
from kv.domain.commands import Create
from kv.domain.model import Key
from kv.domain.service import KVService


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def load(service: KVService, keys: int, value_bytes: int) -> None:
    # Every value its own string, as values decoded from requests are.
    for i in range(keys):
        await service.create(Create(Key(f"user/{i:010d}"), f'"{i:0{value_bytes - 2}d}"'))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    args = parser.parse_args()
    repository = MemoryRepository()
    service = KVService(repository)
    gc.collect()
    before = rss_bytes()
    asyncio.run(load(service, args.keys, args.value_bytes))
    gc.collect()
    grown = rss_bytes() - before
    assert len(repository) == args.keys
    key_bytes = len("user/0000000000")
    print(
        f"{args.keys:,} keys of {key_bytes} bytes with {args.value_bytes}-byte values: "
        f"RSS +{grown / 2**20:,.0f} MiB, {grown / args.keys:,.0f} bytes per key "
        f"({key_bytes + args.value_bytes} bytes of key and value)"
    )
    pauses = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        pauses.append(time.perf_counter() - started)
    print(
        f"with them stored: {len(gc.get_objects()):,} objects tracked by the cyclic GC, "
        f"a full collection {statistics.median(pauses) * 1000:.1f} ms (median of 5)"
    )


if __name__ == "__main__":
    main()
