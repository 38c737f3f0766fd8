"""The metrics' cost per request in µs, measured in one process without a network.

Two apps on memory (KV_METRICS on and off, operation log off) answer `GET /kv/bench`
through their ASGI interface, in alternating batches; the best batch of each is kept, which
makes the difference robust to other load on the machine (wrk A/Bs are not, on a shared
machine). Run pinned to one core:

    taskset -c 0 .venv/bin/python bench/metrics_inprocess.py [--batches 300] [--requests 300]
"""

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from asgi_lifespan import LifespanManager

from kv.container import Settings
from kv.entrypoints.http import create_app

Batch = Callable[[int], Awaitable[float]]


async def serve(stack: AsyncExitStack, *, metrics: bool) -> Batch:
    manager = await stack.enter_async_context(
        LifespanManager(create_app(Settings(metrics=metrics, log_level="WARNING")))
    )
    app = manager.app
    body = b'{"key": "bench", "value": {"n": 12345, "s": "some text"}}'

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_: Any) -> None:
        return None

    def scope(method: str, path: str) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }

    await app(scope("POST", "/kv"), receive, send)

    async def batch(requests: int) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await app(scope("GET", "/kv/bench"), receive, send)
        return (time.perf_counter() - started) / requests * 1e6

    return batch


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    async with AsyncExitStack() as stack:
        on, off = await serve(stack, metrics=True), await serve(stack, metrics=False)
        await on(args.requests)  # warm up both
        await off(args.requests)
        best = {"on": float("inf"), "off": float("inf")}
        gc.disable()
        for _ in range(args.batches):
            best["on"] = min(best["on"], await on(args.requests))
            best["off"] = min(best["off"], await off(args.requests))
        gc.enable()
    print(
        f"GET /kv/bench: metrics on {best['on']:.2f} µs, off {best['off']:.2f} µs, "
        f"cost {best['on'] - best['off']:.2f} µs a request"
    )


if __name__ == "__main__":
    asyncio.run(main())
