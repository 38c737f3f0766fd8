"""Loop time per 1 MiB request body, by shape (#20 item 2).

Each request is a `PUT /v1/<key>` of a body of close to 1 MiB (KV_MAX_BODY_BYTES), sent to
the app in-process on the memory backend, whole, in one message. Nothing in it awaits
anything that is not ready (the memory backend answers at once), so the request runs in one
step of the event loop: the time it takes is the time it holds the loop, during which no
other request is served. Printed per shape: the best and the median of `--rounds`.

    .venv/bin/python bench/body_cost.py [--rounds 7] [--shape NAME]
"""

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.types import Message

from kv.container import Settings
from kv.entrypoints.bodies import ORJSON_SAFE_DEPTH
from kv.entrypoints.http import create_app

MiB = 1024 * 1024


def array_of(item: bytes, *, tail: bytes = b"") -> bytes:
    """`{"value": [item, item, ..., tail]}` of close to 1 MiB."""
    head, end = b'{"value":[', b"]}"
    count = (MiB - len(head) - len(end) - len(tail)) // (len(item) + 1)
    return head + b",".join([item] * count) + tail + end


def chain(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def big_object() -> bytes:
    members, size, n = [], 12, 0
    while size < MiB - 32:
        member = b'"k%d":%d' % (n, n)
        members.append(member)
        size += len(member) + 1
        n += 1
    return b'{"value":{' + b",".join(members) + b"}}"


def one_string(content: bytes) -> bytes:
    count = (MiB - 16) // len(content)
    return b'{"value":"' + content * count + b'"}'


BIG = b",123456789012345678901234"  # an integer beyond 64 bits: the exact path

SHAPES: dict[str, Callable[[], bytes]] = {
    "350k empty arrays": lambda: array_of(b"[]"),
    "350k empty objects": lambda: array_of(b"{}"),
    "small objects": lambda: array_of(b'{"a":1}'),
    "one object of 95k members": big_object,
    "one long string": lambda: one_string(b"x"),
    "one string of escapes": lambda: one_string(b'\\u00e9\\n\\"'),
    "short strings": lambda: array_of(b'"ab"'),
    "floats": lambda: array_of(b"1.5"),
    "9e15 (stored 3.8x longer)": lambda: array_of(b"9e15"),
    "small integers": lambda: array_of(b"1"),
    f"arrays nesting {ORJSON_SAFE_DEPTH}": lambda: array_of(chain(ORJSON_SAFE_DEPTH - 1)),
    f"arrays nesting {ORJSON_SAFE_DEPTH + 1}": lambda: array_of(chain(ORJSON_SAFE_DEPTH)),
    "arrays nesting 256": lambda: array_of(chain(255)),
    "empty arrays, one nesting 256": lambda: array_of(b"[]", tail=b"," + chain(255)),
    "empty arrays, one nesting 257 (400)": lambda: array_of(b"[]", tail=b"," + chain(256)),
    "20-digit integers": lambda: array_of(b"18446744073709551616"),
    "4300-digit integers": lambda: array_of(b"9" * 4300),
    "empty arrays and one big integer": lambda: array_of(b"[]", tail=BIG),
    "small integers and one big integer": lambda: array_of(b"1", tail=BIG),
    "floats and one big integer": lambda: array_of(b"1.5", tail=BIG),
    "small objects and one big integer": lambda: array_of(b'{"a":1}', tail=BIG),
}


async def put(app: Starlette, state: Mapping[str, Any], key: str, body: bytes) -> int:
    """One PUT through the ASGI app (its lifespan's `state`); its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": f"/v1/{key}",
        "raw_path": f"/v1/{key}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"kv"), (b"content-length", b"%d" % len(body))],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(rounds: int, only: str | None) -> None:
    settings = Settings(log_level="WARNING", metrics=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        print(f"orjson {orjson.__version__}, load average {os.getloadavg()[0]:.2f}")
        print(f"{'shape':38} {'bytes':>9} {'status':>6} {'best ms':>8} {'median ms':>9}")
        for name, build in SHAPES.items():
            if only and only not in name:
                continue
            body = build()
            assert len(body) <= settings.max_body_bytes, (name, len(body))
            times = []
            for round_ in range(rounds):
                started = time.perf_counter()
                status = await put(app, state, f"{round_ % 2}", body)
                times.append((time.perf_counter() - started) * 1000)
            best, median = min(times), statistics.median(times)
            print(f"{name:38} {len(body):>9,} {status:>6} {best:>8.1f} {median:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shape", help="only the shapes whose name contains this")
    args = parser.parse_args()
    asyncio.run(measure(args.rounds, args.shape))


if __name__ == "__main__":
    main()
