"""`kv serve` as a user runs it: a real uvicorn process on a free loopback port."""

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers.kv import Server, start_kv, stop_kv


@pytest.fixture
def kv_server(tmp_path: Path) -> Iterator[Server]:
    server = start_kv(tmp_path, {"KV_BACKEND": "memory"})
    yield server
    if server.process.poll() is None:
        stop_kv(server)


def test_serve_answers_the_api_and_logs_each_operation(kv_server: Server) -> None:
    with httpx.Client(base_url=kv_server.url, timeout=10) as client:
        created = client.post("/kv", content=b'{"key": "a/b c", "value": [1]}')
        assert created.status_code == 200 and created.headers["etag"] == '"1"'
        assert client.get("/kv/a/b%20c").json() == {"key": "a/b c", "value": [1], "revision": 1}
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: -15 is a clean stop.
    assert stop_kv(kv_server) in (0, -signal.SIGTERM)
    log = kv_server.log.read_text()
    assert "kv stopped" in log
    assert 'create key="a/b c" outcome=ok status=200' in log
    assert 'get key="a/b c" outcome=ok status=200' in log


def test_a_64_mib_body_is_refused_while_streaming_and_the_server_goes_on(kv_server: Server) -> None:
    chunk = b"x" * (1024 * 1024)
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"key": "big", "value": "'
        for _ in range(64):
            sent += 1
            yield chunk
        yield b'"}'

    with httpx.Client(base_url=kv_server.url, timeout=30) as client:
        try:
            response = client.post("/kv", content=body())
        except httpx.TransportError:
            pass  # the server may close the connection before the client finished sending
        else:
            assert response.status_code == 413
            assert response.headers["content-type"] == "application/problem+json"
        # Declared too large: refused before any of it is read.
        declared = client.post(
            "/kv", content=b"x" * 2_000_000, headers={"content-length": "2000000"}
        )
        assert declared.status_code == 413
    with httpx.Client(base_url=kv_server.url, timeout=10) as fresh:
        assert fresh.get("/kv/big").status_code == 404
        assert fresh.get("/health").status_code == 200
    rss_kib = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{kv_server.process.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
    )
    assert rss_kib < 200 * 1024, f"peak RSS {rss_kib} KiB: the body was buffered"


def test_plain_uvicorn_runs_the_app_from_the_environment(tmp_path: Path) -> None:
    uvicorn = (sys.executable, "-m", "uvicorn", "kv.entrypoints.http:app", "--port")
    server = start_kv(tmp_path, {"KV_BACKEND": "memory", "KV_LOG_FORMAT": "json"}, command=uvicorn)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/kv", json={"key": "u", "value": 1}).status_code == 200
            assert client.get("/").json()["backend"] == "memory"
    finally:
        stop_kv(server)
    assert '"operation":"create"' in server.log.read_text()


def test_several_workers_serve_one_store(tmp_path: Path, redis_server: Any) -> None:
    url = redis_server.settings()["redis_url"]
    server = start_kv(tmp_path, {"KV_WORKERS": "2", "KV_BACKEND": "redis", "KV_REDIS_URL": url})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            # New connections spread over both workers; every one sees every write.
            prefix = f"workers-{time.monotonic_ns()}"
            for i in range(40):
                response = httpx.post(
                    f"{server.url}/kv", json={"key": f"{prefix}/{i}", "value": i}, timeout=10
                )
                assert response.status_code == 200
            for i in range(40):
                assert httpx.get(f"{server.url}/kv/{prefix}/{i}", timeout=10).json()["value"] == i
            assert client.get("/").json()["backend"] == "redis"
    finally:
        assert stop_kv(server) in (0, -signal.SIGTERM)
