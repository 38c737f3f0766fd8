"""SIGTERM in the middle of a load: `kv serve` finishes what it has started and stops.

16 clients write and read without pause; one more request is caught half-sent (its headers
and half its body) when SIGTERM arrives, and finishes sending after. Then:
- every request that got a response got a 2xx or 4xx, never a 5xx (the others found the
  server gone: a refused or closed connection, and only after the signal);
- the half-sent request completes with 200;
- every answered operation is in the log (the batched operation log is flushed), and the
  log's last line is "kv stopped";
- the process exits, within the graceful-shutdown bound.
"""

import asyncio
import re
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.workload import LIVE_BACKENDS, Run, kv_environment, run_clients
from tests.servers.kv import Server, start_kv

GRACEFUL_SHUTDOWN_SECONDS = 10  # kv serve's bound for requests in flight
EXIT_SLACK = 20.0
LOAD_SECONDS_MAX = 60.0


async def half_sent_put(server: Server, key: str, signalled: asyncio.Event) -> bytes:
    """A PUT whose body is half sent before SIGTERM and the rest after; its response."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        created = await client.post("/kv", json={"key": key, "value": "before the signal"})
        assert created.status_code == 200
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"value": "sent across the signal"}'
    writer.write(
        b"PUT /kv/%s HTTP/1.1\r\nHost: kv\r\nX-Request-ID: half-sent\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (key.encode(), len(body), body[:10])
    )
    await writer.drain()
    await signalled.wait()
    await asyncio.sleep(0.5)  # the server is shutting down by now
    writer.write(body[10:])
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), timeout=GRACEFUL_SHUTDOWN_SECONDS + 10)
    writer.close()
    return response


async def load_and_terminate(
    server: Server, keys: list[str], clients: int, answers: int
) -> tuple[Run, bytes, float, int]:
    done = asyncio.Event()
    signalled = asyncio.Event()
    run = Run()
    load = asyncio.create_task(run_clients(server.url, keys, clients=clients, until=done, into=run))
    half_sent = asyncio.create_task(half_sent_put(server, f"{keys[0]}-half-sent", signalled))
    # Signal once the load is well under way (however slow the machine), with a bound.
    deadline = time.monotonic() + LOAD_SECONDS_MAX
    while time.monotonic() < deadline:
        if len(run.answers) >= answers:
            break
        await asyncio.sleep(0.05)
    signalled_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    signalled.set()
    deadline = signalled_at + GRACEFUL_SHUTDOWN_SECONDS + EXIT_SLACK
    while server.process.poll() is None:
        assert time.monotonic() < deadline, "kv serve did not exit after SIGTERM"
        await asyncio.sleep(0.05)
    done.set()
    await load
    return run, await half_sent, signalled_at, server.process.returncode


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
def test_sigterm_under_load_answers_what_it_started_flushes_the_log_and_exits(
    backend: str, backend_settings: dict[str, Any], tmp_path: Path, soak: bool
) -> None:
    server = start_kv(tmp_path, kv_environment(backend, backend_settings))
    prefix = uuid.uuid4().hex[:8]
    keys = [f"{prefix}-{n}" for n in range(4)]
    try:
        run, half_sent, signalled_at, code = asyncio.run(
            load_and_terminate(server, keys, clients=16, answers=20_000 if soak else 500)
        )
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert code in (0, -signal.SIGTERM)

    answered = [a for a in run.answers if a.status is not None]
    failed = [a for a in run.answers if a.status is None]
    assert len(answered) >= 500, "the load never got going"
    assert all(200 <= a.status < 500 for a in answered if a.status), [
        (a.status, a.error) for a in answered if a.status is None or a.status >= 500
    ][:5]
    # Connections refused or closed: only once the server was told to stop.
    assert all(a.operation.invoked + a.latency >= signalled_at for a in failed), [
        a.error for a in failed if a.operation.invoked + a.latency < signalled_at
    ][:5]

    assert half_sent.startswith(b"HTTP/1.1 200 "), half_sent[:300]
    assert b'"value":"sent across the signal"' in half_sent

    log = server.log.read_text()
    assert log.rstrip().splitlines()[-1].endswith("kv stopped"), log[-2000:]
    logged = set(re.findall(r"request_id=(\S+)", log))
    assert "half-sent" in logged
    missing = [a.request_id for a in answered if a.request_id not in logged]
    assert not missing, f"{len(missing)} answered operations not in the log, e.g. {missing[:3]}"


def test_sigterm_ends_watch_streams_at_once_and_logs_their_end(tmp_path: Path) -> None:
    """A watch stream never ends by itself: on SIGTERM it gets `unavailable` and ends, so
    the process exits well before the grace period it would otherwise use up."""
    server = start_kv(tmp_path, {"KV_BACKEND": "memory"})
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as stream:
        stream.sendall(b"GET /watch?prefix= HTTP/1.1\r\nHost: kv\r\n\r\n")
        received = b""
        while b"event: ready" not in received:
            received += stream.recv(4096)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        while chunk := stream.recv(4096):
            received += chunk
    closed_after = time.monotonic() - signalled
    exit_code = server.process.wait(timeout=GRACEFUL_SHUTDOWN_SECONDS + EXIT_SLACK)
    exited_after = time.monotonic() - signalled
    assert b"event: unavailable" in received
    assert exit_code in (0, -signal.SIGTERM)
    # Both well under the 10 s grace period a stream would otherwise hold (slack for load).
    assert closed_after < GRACEFUL_SHUTDOWN_SECONDS / 2, closed_after
    assert exited_after < GRACEFUL_SHUTDOWN_SECONDS / 2 + 2, exited_after
    log = server.log.read_text()
    assert 'watch key="" outcome=ok status=200' in log and 'ended="shutdown"' in log
