"""An open-loop client: requests at a fixed rate, whatever the server does (wrk2-style).

    python bench/paced.py --port 8000 --workload "POST new keys" --rate 5000 --duration 5

Request k is due at t0 + k/rate. Each is sent on one of `--connections` keep-alive
connections (HTTP/1.1, one request in flight per connection); when every connection is busy
the request waits for one, and that wait counts in its latency, as it does for a user whose
request a slow server delays: latency is measured from when the client was ready to send,
not from when a connection freed up (which would hide the stall: coordinated omission).
Prints one JSON object: offered and achieved rate, statuses, connections lost, the latency
percentiles in ms, and how late the pacer itself ran (its sleeps have ~1 ms granularity; a
late pacer means a loaded client, not a slow server, and is not counted as latency).

Unlike `hey -q`, whose workers each wait for their response before the next tick (and drop
ticks they miss), this keeps the offered rate; unlike hey's CSV output, it counts errors.
"""

import argparse
import asyncio
import gc
import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import cast

import uvloop
from workloads import BY_NAME

TICK = 0.001
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, client: "Client") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes, started: float) -> None:
        assert self.transport is not None
        self.started = started
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        match = _CONTENT_LENGTH.search(self.buffer, 0, head_end + 2)
        end = head_end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buffer) < end:
            return
        status = int(self.buffer[9:12])
        del self.buffer[:end]
        self.client.answered(self, status, time.perf_counter())

    def connection_lost(self, _exc: Exception | None) -> None:
        self.client.lost(self)


class Client:
    def __init__(self, requests: Iterator[bytes], rate: float, total: int) -> None:
        self.requests = requests
        self.rate = rate
        self.total = total
        self.idle: deque[Connection] = deque()
        self.waiting: deque[float] = deque()  # when each waiting request was ready to go
        self.in_flight: set[Connection] = set()
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.connections_lost = 0
        self.last_answer = 0.0
        self.finished = asyncio.Event()

    def dispatch(self, started: float) -> None:
        if self.idle:
            connection = self.idle.pop()
            self.in_flight.add(connection)
            connection.send(next(self.requests), started)
        else:
            self.waiting.append(started)

    def answered(self, connection: Connection, status: int, now: float) -> None:
        self.latencies.append(now - connection.started)
        self.statuses[status] += 1
        self.last_answer = now
        if self.waiting:
            connection.send(next(self.requests), self.waiting.popleft())
        else:
            self.in_flight.discard(connection)
            self.idle.append(connection)
        if len(self.latencies) + self.connections_lost >= self.total:
            self.finished.set()

    def lost(self, connection: Connection) -> None:
        if connection in self.in_flight:
            self.in_flight.discard(connection)
            self.connections_lost += 1
        elif connection in self.idle:
            self.idle.remove(connection)

    async def run(self, port: int, connections: int) -> float:
        """Send the requests on schedule; the time the first was due."""
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            _, connection = await loop.create_connection(
                lambda: Connection(self), "127.0.0.1", port
            )
            self.idle.append(connection)
        start = time.perf_counter() + 0.01
        sent = 0
        while sent < self.total:
            now = time.perf_counter()
            due = min(self.total, math.floor((now - start) * self.rate) + 1)
            while sent < due:
                self.lateness.append(now - (start + sent / self.rate))
                self.dispatch(now)
                sent += 1
            # Never less than a tick: the loop's timers have ~1 ms granularity, and shorter
            # sleeps would spin. The requests due meanwhile go out together at the next tick.
            await asyncio.sleep(max(TICK, start + sent / self.rate - time.perf_counter()))
        return start


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def measure(args: argparse.Namespace) -> dict[str, object]:
    total = round(args.rate * args.duration)
    requests = BY_NAME[args.workload].requests
    assert requests is not None, args.workload
    client = Client(requests(), args.rate, total)
    start = await client.run(args.port, args.connections)
    try:
        async with asyncio.timeout(args.drain):
            await client.finished.wait()
    except TimeoutError:
        pass
    answered = len(client.latencies)
    latencies = sorted(client.latencies)
    lateness = sorted(client.lateness)
    elapsed = max(client.last_answer - start, args.duration)
    return {
        "offered": args.rate,
        "achieved": answered / elapsed,
        "requests": total,
        "answered": answered,
        "unanswered": total - answered,
        "connections_lost": client.connections_lost,
        "statuses": dict(client.statuses),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p999_ms": percentile(latencies, 0.999) * 1000,
        "max_ms": (latencies[-1] if latencies else math.nan) * 1000,
        "pacer_late_p99_ms": percentile(lateness, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workload", required=True, choices=sorted(BY_NAME))
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of requests")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for answers")
    args = parser.parse_args()
    gc.disable()  # the client's own pauses would count as the server's latency
    print(json.dumps(uvloop.run(measure(args))))


if __name__ == "__main__":
    main()
