"""CPU time per request inside the app, without HTTP parsing: kv on each backend vs the floor.

Drives the ASGI apps directly (no uvicorn, no sockets to the client) with 50 concurrent
requests, and reports the process CPU time per request. CPU time, unlike throughput, hardly
moves when other processes share the machine, so this is the number to watch while tuning;
bench/run.py measures the real thing. The backend server runs in its own process (CPU 1).

    .venv/bin/python bench/app_cost.py [--backends memory tarantool redis] [-n 20000]
"""

import argparse
import asyncio
import contextlib
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
WORKLOADS = {
    "GET existing": ("GET", "/kv/bench", b""),
    "PUT overwrite": ("PUT", "/kv/bench", b'{"value": ' + VALUE.encode() + b"}"),
}


async def drive(
    app: App, state: dict[str, Any], method: str, path: str, body: bytes, n: int
) -> float:
    """CPU microseconds per request for `n` requests, CONCURRENCY at a time."""
    headers = [(b"host", b"bench"), (b"content-length", str(len(body)).encode())]
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    async def worker(count: int) -> None:
        for _ in range(count):
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
                "headers": headers,
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
                "state": dict(state),
            }
            await app(scope, receive, send)

    started = time.process_time()
    await asyncio.gather(*(worker(n // CONCURRENCY) for _ in range(CONCURRENCY)))
    elapsed = time.process_time() - started
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} responses were not 200 (first: {bad[0]})")
    return elapsed / len(statuses) * 1e6


async def measure(backend: str, env: dict[str, str], n: int) -> None:
    fields = {name[3:].lower(): value for name, value in env.items()}
    settings = Settings(log_level="INFO", log_file="/dev/null", **fields)  # type: ignore[arg-type]
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        kv: App = manager.app
        create = b'{"key":"bench","value":' + VALUE.encode() + b"}"
        with contextlib.suppress(RuntimeError):  # 409s on a second run against one server
            await drive(kv, {}, "POST", "/kv", create, CONCURRENCY)
        for name, (method, path, body) in WORKLOADS.items():
            for _ in range(2):
                ours = await drive(kv, {}, method, path, body, n)
                base = await drive(floor_app, {}, method, path, body, n)
                print(
                    f"{backend:10} {name:14} kv {ours:6.1f} us/req   floor {base:6.1f} us/req",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", default=["memory", "tarantool", "redis"])
    parser.add_argument("-n", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            # uvloop, as `kv serve` runs.
            with (
                backend_server(backend, Path(tmp)) as server,
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            ):
                runner.run(measure(backend, server.settings, args.n))


if __name__ == "__main__":
    main()
