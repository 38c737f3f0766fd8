"""The cost of a listing page inside the app: GET /kv?prefix=...&limit=100 on a store of n keys.

Loads n keys into the memory backend (straight into the repository, which is the same state
as POSTing them), then drives the ASGI app directly (no sockets) with one request at a time
and reports the median and p99 wall time of a page, for small and large stores, so that
"not growing with n" can be seen. Pages start at a random key of the prefix (a cursor), with
and without values.

    .venv/bin/python bench/listing.py [--sizes 10000 1000000] [--pages 2000]
"""

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import orjson
import uvloop
from asgi_lifespan import LifespanManager
from dependency_injector import providers

from kv.adapters.memory import MemoryRepository
from kv.container import Settings, build_container
from kv.domain.model import Key
from kv.entrypoints.http import create_app
from kv.entrypoints.listing import encode_cursor

VALUE = '{"n":12345,"s":"some text"}'


async def page_times(app: Any, paths: list[str]) -> list[float]:
    times: list[float] = []
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.append(message["body"])

    for path in paths:
        route, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": route,
            "raw_path": route.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        started = time.perf_counter()
        await app(scope, receive, send)
        times.append(time.perf_counter() - started)
    items = orjson.loads(body[-1])["items"]
    assert len(items) == 100, len(items)
    return times


async def measure(size: int, pages: int) -> None:
    store = MemoryRepository()
    for i in range(size):
        await store.create(Key(f"user/{i:010d}"), VALUE)
    container = build_container(Settings())
    container.store.override(providers.Object(store))
    settings = Settings(log_file="/dev/null")
    app = create_app(settings, container=container)
    rng = random.Random(1)
    async with LifespanManager(app) as manager:
        for values in ("false", "true"):
            paths = []
            for _ in range(pages):
                start = f"user/{rng.randrange(size - 200):010d}"
                cursor = encode_cursor("user/", start)
                paths.append(f"/kv?prefix=user/&limit=100&values={values}&cursor={cursor}")
            times = sorted(await page_times(manager.app, paths))
            print(
                f"memory {size:>9,} keys, values={values:5}: page median "
                f"{statistics.median(times) * 1000:.3f} ms, p99 "
                f"{times[int(len(times) * 0.99)] * 1000:.3f} ms",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--pages", type=int, default=2000)
    args = parser.parse_args()
    for size in args.sizes:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(measure(size, args.pages))


if __name__ == "__main__":
    main()
