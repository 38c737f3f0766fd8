"""CPU time per request inside the app, without HTTP parsing: kv on each backend vs the floor.

Drives the ASGI apps directly (no uvicorn, no sockets to the client) with 50 concurrent
requests, and reports the process CPU time per request: the least of `--blocks` blocks of
n / blocks requests, kv's and the floor's alternating (on this VM a block can lose a third
to the hypervisor or a neighbour; the least-disturbed one is the cost). bench/run.py
measures the real thing. The backend server runs in its own process (CPU 1). To compare two
commits, run it with PYTHONPATH at each one's exported `src/` (see bench/ab.py's export).

    .venv/bin/python bench/app_cost.py [--backends memory tarantool redis] [-n 20000]
        [--blocks 10]
"""

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from asgi_lifespan import LifespanManager

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import app as floor_app
from processes import backend_server
from workloads import VALUE

from kv.container import Settings
from kv.entrypoints.http import create_app

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
CONCURRENCY = 50
Body = Callable[[int], bytes]  # the body of the i-th request
WORKLOADS: dict[str, tuple[str, str, Body]] = {
    "GET existing": ("GET", "/kv/bench", lambda _: b""),
    "PUT overwrite": ("PUT", "/kv/bench", lambda _: b'{"value": ' + VALUE.encode() + b"}"),
    # A new key each time, shaped as bench/workloads.py's (a long run of digits in it).
    "POST new keys": (
        "POST",
        "/kv",
        lambda i: b'{"key":"new-%d-%d","value":%b}' % (time.time_ns(), i, VALUE.encode()),
    ),
}


_numbers = itertools.count()  # request numbers, so that POST's keys are new in every block


async def drive(app: App, method: str, path: str, body: Body, n: int) -> float:
    """CPU microseconds per request for `n` requests, CONCURRENCY at a time."""
    bodies = [body(next(_numbers)) for _ in range(n)]  # made before the clock starts
    statuses: list[int] = []

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    async def worker(mine: list[bytes]) -> None:
        for content in mine:
            message = {"type": "http.request", "body": content, "more_body": False}

            async def receive(message: dict[str, Any] = message) -> dict[str, Any]:
                return message

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"bench"), (b"content-length", b"%d" % len(content))],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
                "state": {},
            }
            await app(scope, receive, send)

    started = time.process_time()
    await asyncio.gather(*(worker(bodies[k::CONCURRENCY]) for k in range(CONCURRENCY)))
    elapsed = time.process_time() - started
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} responses were not 200 (first: {bad[0]})")
    return elapsed / len(statuses) * 1e6


async def measure(backend: str, env: dict[str, str], n: int, blocks: int) -> None:
    fields = {name[3:].lower(): value for name, value in env.items()}
    settings = Settings(log_level="INFO", log_file="/dev/null", **fields)  # type: ignore[arg-type]
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        kv: App = manager.app
        create = b'{"key":"bench","value":' + VALUE.encode() + b"}"
        with contextlib.suppress(RuntimeError):  # 409s on a second run against one server
            await drive(kv, "POST", "/kv", lambda _: create, CONCURRENCY)
        for name, (method, path, body) in WORKLOADS.items():
            ours, base = [], []
            for _ in range(blocks):
                ours.append(await drive(kv, method, path, body, n // blocks))
                base.append(await drive(floor_app, method, path, body, n // blocks))
            print(
                f"{backend:10} {name:14} kv {min(ours):6.1f} us/req   floor {min(base):6.1f} us/req"
                f"   (least of {blocks} blocks; medians {statistics.median(ours):.1f} and"
                f" {statistics.median(base):.1f})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", default=["memory", "tarantool", "redis"])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--blocks", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            # uvloop, as `kv serve` runs.
            with (
                backend_server(backend, Path(tmp)) as server,
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            ):
                runner.run(measure(backend, server.settings, args.n, args.blocks))


if __name__ == "__main__":
    main()
