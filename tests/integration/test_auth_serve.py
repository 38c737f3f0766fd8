"""The bearer token on a real `kv serve`: required on the data paths, and absent from
everything the process logs, from start-up to shutdown (stderr and the log file)."""

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers.kv import start_kv, stop_kv


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_token_is_required_and_never_logged(tmp_path: Path, fmt: str) -> None:
    token = "kvtok-" + secrets.token_urlsafe(24)
    log_file = tmp_path / "kv.log"
    server = start_kv(
        tmp_path,
        {
            "KV_BACKEND": "memory",
            "KV_AUTH_TOKEN": token,
            "KV_LOG_LEVEL": "TRACE",
            "KV_LOG_FORMAT": fmt,
            "KV_LOG_FILE": str(log_file),
        },
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            right = {"authorization": f"Bearer {token}"}
            for headers in ({"authorization": f"Bearer {token}!"}, {"authorization": token}, {}):
                refused = client.post("/kv", json={"key": "a", "value": 1}, headers=headers)
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert token not in refused.text
            created = client.post("/kv", json={"key": "a", "value": 1}, headers=right)
            assert created.status_code == 200
            assert client.get("/kv/a", headers=right).json()["value"] == 1
            assert client.get("/kv/a").status_code == 401
            for open_path in ("/", "/health", "/ready"):
                assert client.get(open_path).status_code == 200
    finally:
        assert stop_kv(server) in (0, -signal.SIGTERM)
    for log in (server.log.read_text(), log_file.read_text()):
        assert "kv stopped" in log
        assert ("get key=" in log) or ('"operation":"get"' in log)  # the log was written
        assert token not in log


def test_a_failed_start_up_does_not_print_the_token() -> None:
    token = "kvtok-" + secrets.token_urlsafe(24)
    environ = {**os.environ, "KV_AUTH_TOKEN": token, "KV_BACKEND": "nosuch"}
    result = subprocess.run(
        [sys.executable, "-m", "kv.entrypoints.cli", "serve"],
        env=environ,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"KV_BACKEND" in result.stderr
    assert token.encode() not in result.stderr + result.stdout
