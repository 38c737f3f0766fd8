"""What kv serve's HTTP protocol costs per request: two versions of protocol.py, side by side.

wrk against `kv serve` measures the whole service, whose rounds swing by 10-30% on a machine
shared with other load: too coarse for the protocol's share (a few microseconds). This loads
two copies of `src/kv/entrypoints/protocol.py` into one process and feeds each a keep-alive
stream of requests that arrive in one piece (a GET, and a PUT with its body), over a fake
transport, with an ASGI app that answers at once. Each request's task is run as soon as
data_received returns, and timers are a real uvloop loop's, as under `kv serve`. The two
versions run in alternate blocks of 500 requests, so both see the same machine load; the
figures are CPU time per request (protocol, uvicorn's request cycle, the app's two sends).

    git show main:src/kv/entrypoints/protocol.py > /tmp/protocol_main.py
    .venv/bin/python bench/protocol_cost.py /tmp/protocol_main.py src/kv/entrypoints/protocol.py
    options: [--blocks 300]

Both copies import the rest of kv from the installed tree, so an older protocol.py must not
need a module that has changed since. That includes the class's base, ConnectionDeadlines
(deadlines.py, split from protocol.py): a copy of protocol.py from before that split holds the
whole class, a later one only its events.
"""

import argparse
import asyncio
import importlib.util
import statistics
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

GET = (
    b"GET /kv/bench HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nX-Request-ID: abc\r\n\r\n"
)
BODY = b'{"value": {"n": 12345, "s": "some text"}}'
PUT = b"PUT /kv/bench HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: %d\r\n\r\n%b" % (
    len(BODY),
    BODY,
)
BLOCK = 500  # requests per timed block


class Loop:
    """The loop the protocol sees: a real uvloop loop's clock and timers (never run), and
    tasks kept until `run_tasks`, as a loop would run them after data_received."""

    def __init__(self) -> None:
        self.real = uvloop.new_event_loop()
        self.tasks: list[Coroutine[Any, Any, None]] = []

    def time(self) -> float:
        return self.real.time()

    def call_later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        return self.real.call_later(delay, callback, *args)

    def call_at(self, when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        return self.real.call_at(when, callback, *args)

    def create_task(self, coroutine: Coroutine[Any, Any, None], **_: Any) -> "Task":
        self.tasks.append(coroutine)
        return Task()

    def run_tasks(self) -> None:
        while self.tasks:
            try:
                self.tasks.pop().send(None)
            except StopIteration:
                continue
            raise AssertionError("the app waited: a request did not arrive in one piece")


class Task:
    def add_done_callback(self, _callback: Any) -> None:
        pass


class Transport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}
        return addresses.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["method"] == "PUT":
        assert (await receive())["body"] == BODY
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


def open_connection(name: str, path: Path, loop: Loop, config: Config) -> asyncio.Protocol:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = module.protocol_factory(
        header_timeout=10, body_timeout=30, max_header_bytes=65536, limit_concurrency=10**9
    )
    connection: asyncio.Protocol = factory(
        config=config, server_state=ServerState(), app_state={}, _loop=loop
    )
    connection.connection_made(Transport())
    return connection


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path, help="the protocol.py to compare with")
    parser.add_argument("new", type=Path, help="the protocol.py whose cost is measured")
    parser.add_argument("--blocks", type=int, default=300)
    args = parser.parse_args()
    loop = Loop()
    asyncio.get_running_loop = lambda: loop  # type: ignore[assignment,return-value]
    config = Config(app=app, log_config=None, lifespan="off")
    config.load()
    connections = {
        "base": open_connection("base_protocol", args.base, loop, config),
        "new": open_connection("new_protocol", args.new, loop, config),
    }
    print("request  version  us/request: best    p10  median")
    for name, request in (("GET", GET), ("PUT", PUT)):
        times: dict[str, list[float]] = {version: [] for version in connections}
        for _ in range(args.blocks):
            for version, connection in connections.items():
                started = time.thread_time_ns()
                for _ in range(BLOCK):
                    connection.data_received(request)
                    loop.run_tasks()
                times[version].append((time.thread_time_ns() - started) / BLOCK / 1000)
        p10 = {version: sorted(spent)[len(spent) // 10] for version, spent in times.items()}
        median = {version: statistics.median(spent) for version, spent in times.items()}
        for version, spent in times.items():
            print(
                f"{name:7}  {version:7}  {min(spent):16.2f}  {p10[version]:5.2f}  "
                f"{median[version]:6.2f}"
            )
        print(
            f"{name:7}  new/base: p10 {p10['new'] / p10['base']:.3f}, "
            f"median {median['new'] / median['base']:.3f}"
        )


if __name__ == "__main__":
    main()
