"""Memory of a real `kv serve` while writes wait for a frozen backend (#20 item 1).

The issue: 32 concurrent 1 MiB PUTs of ~350k `[]` took kv from ~130 to ~950 MiB of RSS, the
parsed values alive while the requests waited for Tarantool or Redis. Now a waiting request
holds the value's text (and the adapter its bytes for the backend): a few MiB, not 26.
"""

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.backends import private_server
from tests.integration.workload import kv_environment
from tests.servers.kv import Server, start_kv, stop_kv

MiB = 1024 * 1024
IN_FLIGHT = 16
# Per waiting request: the value's text (1 MiB), its bytes in the request to the backend
# (1 MiB), and the allocator's slack; before the fix it was ~26 MiB.
PER_REQUEST = 4 * MiB


def settled_rss(server: Server, within: float = 90.0) -> int:
    """kv's RSS once it stops growing (every body read and parsed), checked twice a second."""
    samples = [rss(server)]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(rss(server))
        if len(samples) >= 5 and max(samples[-5:]) - min(samples[-5:]) < MiB:
            break
    return samples[-1]


def rss(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def put_request(key: str, body: bytes) -> bytes:
    head = (
        f"PUT /v1/{key} HTTP/1.1\r\nHost: kv\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def flood_body() -> bytes:
    count = (MiB - 20) // 3
    return b'{"value":[' + b",".join([b"[]"] * count) + b"]}"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tarantool", "redis"])
def test_writes_waiting_for_a_frozen_backend_hold_a_few_mib_each(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = private_server(request, backend)
    kv = start_kv(tmp_path, kv_environment(backend, server.settings(), backend_timeout=60))
    host, port = kv.url.removeprefix("http://").split(":")
    body = flood_body()
    sockets: list[socket.socket] = []
    try:
        with httpx.Client(base_url=kv.url, timeout=30) as client:
            for key in ("warm-up", "warm-up"):  # the parser's arenas, in the baseline
                assert client.put(f"/v1/{key}", content=body).status_code == 200
        baseline = rss(kv)
        server.pause()  # type: ignore[attr-defined]
        try:
            for n in range(IN_FLIGHT):
                sock = socket.create_connection((host, int(port)), timeout=60)
                sock.sendall(put_request(f"waiting-{n}", body))
                sockets.append(sock)
            held = settled_rss(kv) - baseline
        finally:
            server.resume()  # type: ignore[attr-defined]
        statuses = [sock.recv(64).split(b" ")[1] for sock in sockets]
        assert statuses == [b"200"] * IN_FLIGHT
        assert held <= IN_FLIGHT * PER_REQUEST, f"{held / MiB:.0f} MiB for {IN_FLIGHT} requests"
    finally:
        for sock in sockets:
            sock.close()
        stop_kv(kv)
