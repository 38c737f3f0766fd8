"""SSE watchers for the benchmark: N streams of `GET /watch?prefix=P`, counting their events.

Run by bench/new_ops.py in a process of its own (pinned beside wrk), driven over stdin and
stdout, one line each way:

    python bench/watchers.py --port 8000 --prefix w/ --count 10
    -> ready     (every stream has received `event: ready`)
    <- count     -> {"put": ..., "overflow": ..., "unavailable": ..., "ended": ..., "fewest": ...}
    <- quit      -> the same, then the streams are closed

Events are counted without decoding them (`event: put` lines, across chunk boundaries), so
that the reader keeps up with kv rather than the other way round; `overflow` and
`unavailable` are kv telling a watcher it fell too far behind or lost the feed.
"""

import argparse
import asyncio
import functools
import json
import sys
from typing import Any, cast

import uvloop

COUNTED = (b"event: put\n", b"event: overflow\n", b"event: unavailable\n")
READY = b"event: ready\n"
_TAIL = max(len(pattern) for pattern in (*COUNTED, READY)) - 1


class WatchStream(asyncio.Protocol):
    def __init__(self, request: bytes, ready: asyncio.Future[None]) -> None:
        self.request = request
        self.ready = ready
        self.counts = dict.fromkeys(COUNTED, 0)
        self.tail = b""
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        window = self.tail + data
        if not self.ready.done() and READY in window:
            self.ready.set_result(None)
        for pattern in COUNTED:
            # The last len - 1 bytes before `data`: a match there ends in `data`, so none is
            # counted twice, and none is missed across a chunk boundary.
            self.counts[pattern] += window.count(pattern, max(0, len(self.tail) - len(pattern) + 1))
        self.tail = window[-_TAIL:]

    def connection_lost(self, _exc: Exception | None) -> None:
        self.ended = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the watch stream closed before `ready`"))


def totals(streams: list[WatchStream]) -> dict[str, Any]:
    return {
        "put": sum(s.counts[COUNTED[0]] for s in streams),
        "overflow": sum(s.counts[COUNTED[1]] for s in streams),
        "unavailable": sum(s.counts[COUNTED[2]] for s in streams),
        "ended": sum(s.ended for s in streams),
        "fewest": min((s.counts[COUNTED[0]] for s in streams), default=0),
    }


async def watch(port: int, prefix: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    request = (
        f"GET /watch?prefix={prefix} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    streams: list[WatchStream] = []
    transports: list[asyncio.BaseTransport] = []
    readies: list[asyncio.Future[None]] = []
    for _ in range(count):
        ready = loop.create_future()
        transport, stream = await loop.create_connection(
            functools.partial(WatchStream, request, ready), "127.0.0.1", port
        )
        streams.append(stream)
        transports.append(transport)
        readies.append(ready)
    async with asyncio.timeout(30):
        await asyncio.gather(*readies)
    print("ready", flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        print(json.dumps(totals(streams)), flush=True)
        if line in ("quit", ""):
            break
    for connection in transports:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(watch(args.port, args.prefix, args.count))


if __name__ == "__main__":
    main()
