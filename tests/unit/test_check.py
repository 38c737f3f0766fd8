"""`kv check`: green against a real `kv serve`, red (naming the step) against a broken app,
and its exit codes, summary line, `--json`, token and timeout.

The servers listen on free loopback ports: `kv serve` in a subprocess, stopped by its pid;
the in-process apps under uvicorn in a thread.
"""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from kv.adapters.memory import MemoryRepository
from kv.container import Settings
from kv.domain.commands import Create, Get, Put
from kv.domain.errors import KeyExists
from kv.domain.model import Record
from kv.domain.ports import Repository
from kv.domain.service import KVService
from kv.domain.watch import WatchHub
from kv.entrypoints.cli import main
from kv.entrypoints.http import create_app
from tests.servers import free_port
from tests.servers.kv import start_kv, stop_kv

TOKEN = secrets.token_urlsafe(16)
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")
STARTUP_SECONDS = 15


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any KV_* setting of the machine running the tests."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KV_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def kv_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real `kv serve` (memory backend) running in a subprocess."""
    server = start_kv(tmp_path_factory.mktemp("kv-serve"), {"KV_LOG_LEVEL": "WARNING"})
    yield server.url
    stop_kv(server)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kv.entrypoints.cli", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def serve_in_thread(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class NoOverwriteService(KVService):
    """A deliberately broken service: PUT /v1 creates a key but never overwrites it."""

    async def put(self, command: Put) -> Record:
        if not command.upsert:
            return await super().put(command)
        try:
            return await self.create(Create(command.key, command.value))
        except KeyExists:
            return await self.get(Get(command.key))


class WithService:
    """Hands the app's handlers a service of our choosing over the app's own repository and
    watch hub, and remembers that repository so a test can look at what is stored."""

    def __init__(
        self, app: ASGIApp, make: Callable[[Repository, WatchHub | None], KVService] = KVService
    ):
        self.app = app
        self.make = make
        self.repository: Repository | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope["state"]
            service = state["service"]
            self.repository = service.repository
            scope["state"] = {**state, "service": self.make(service.repository, service.watches)}
        await self.app(scope, receive, send)


@pytest.fixture
def quiet_settings() -> Settings:
    return Settings(log_level="WARNING")


def check_lines(output: str) -> tuple[list[str], int, int]:
    """The step lines and the summary's counts, checking the output's shape on the way."""
    *steps, summary = output.strip().splitlines()
    match = SUMMARY.match(summary)
    assert match, summary
    passed, failed = int(match[1]), int(match[2])
    assert all(line.startswith(("PASS ", "FAIL ")) for line in steps), steps
    assert passed == sum(line.startswith("PASS ") for line in steps)
    assert failed == sum(line.startswith("FAIL ") for line in steps)
    return steps, passed, failed


# --- against a real `kv serve` ---------------------------------------------------------------


def test_check_passes_against_kv_serve(kv_serve: str) -> None:
    result = run_cli("check", kv_serve)
    assert result.returncode == 0, result.stdout + result.stderr
    steps, passed, failed = check_lines(result.stdout)
    assert failed == 0
    assert passed >= 15
    names = [line.removeprefix("PASS ") for line in steps]
    for scenario in ("overwrite", "deletion", "kv"):
        assert f"{scenario}: clean up" in names


def test_check_json_against_kv_serve(kv_serve: str) -> None:
    result = run_cli("check", kv_serve, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["url"] == kv_serve
    assert report["prefix"].startswith("kv-check-")
    assert report["failed"] == 0
    assert report["passed"] == len(report["steps"]) >= 15
    assert all(step["passed"] and step["detail"] == "" for step in report["steps"])


def test_check_runs_twice_on_the_same_server(kv_serve: str) -> None:
    """A random prefix and a clean-up each time: runs never collide."""
    assert run_cli("check", kv_serve).returncode == 0
    assert run_cli("check", kv_serve.removeprefix("http://") + "/").returncode == 0


# --- against in-process apps --------------------------------------------------------------


def test_check_fails_naming_the_step_when_put_does_not_overwrite(
    quiet_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = WithService(create_app(quiet_settings), NoOverwriteService)
    with serve_in_thread(broken) as url:
        status = main(["check", url])
    output = capsys.readouterr().out
    assert status == 1
    steps, passed, failed = check_lines(output)
    failures = [line for line in steps if line.startswith("FAIL ")]
    assert len(failures) == 2
    assert failures[0].startswith(
        "FAIL overwrite: PUT /v1 overwrites one key and GET reads the new value: PUT /v1/"
    )
    assert failures[1].startswith("FAIL overwrite: ten overwrites of one key, the last one wins: ")
    assert failed == 2
    assert passed > 0
    # The detail says what the server answered and what was expected.
    assert "answered value" in failures[0]
    assert "expected {'overwritten': True}" in failures[0]


def test_check_json_reports_the_failing_steps(
    quiet_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = WithService(create_app(quiet_settings), NoOverwriteService)
    with serve_in_thread(broken) as url:
        status = main(["check", url, "--json"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert status == 1
    assert report["ok"] is False
    assert report["failed"] == 2
    failing = [step for step in report["steps"] if not step["passed"]]
    assert [step["name"] for step in failing] == [
        "overwrite: PUT /v1 overwrites one key and GET reads the new value",
        "overwrite: ten overwrites of one key, the last one wins",
    ]
    assert all(step["detail"] for step in failing)


def test_check_touches_no_other_key_and_leaves_nothing_behind(
    quiet_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = WithService(create_app(quiet_settings))
    with serve_in_thread(app) as url:
        httpx.post(f"{url}/kv", json={"key": "kv-check-mine", "value": "keep me"})
        status = main(["check", url])
        assert httpx.get(f"{url}/kv/kv-check-mine").json()["value"] == "keep me"
    assert status == 0, capsys.readouterr().out
    assert isinstance(app.repository, MemoryRepository)
    assert len(app.repository) == 1


def test_check_sends_the_token_from_kv_auth_token(
    quiet_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_in_thread(create_app(quiet_settings.replace(auth_token=TOKEN))) as url:
        monkeypatch.delenv("KV_AUTH_TOKEN", raising=False)
        assert main(["check", url]) == 1
        without = capsys.readouterr().out
        monkeypatch.setenv("KV_AUTH_TOKEN", TOKEN)
        assert main(["check", url]) == 0
    assert "answered 401, expected 200" in without
    _, passed, _ = check_lines(without)
    assert passed == 0


# --- unreachable servers, timeouts, arguments --------------------------------------------


def test_check_exits_2_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["check", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"kv check: cannot reach {url}" in captured.err


def test_check_json_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["check", url, "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert "cannot reach" in report["error"]


def test_check_gives_up_after_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that accepts connections but never answers: exit 2 after --timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        assert main(["check", url, "--timeout", "0.3"]) == 2
        assert time.monotonic() - started < 5
    assert "no answer in time" in capsys.readouterr().err


def test_check_exit_code_2_from_the_console_script_too() -> None:
    result = run_cli("check", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr


@pytest.mark.parametrize("timeout", ["0", "-1", "soon"])
def test_check_refuses_a_bad_timeout(timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "http://127.0.0.1:1", "--timeout", timeout])
    assert exited.value.code == 2
    assert "--timeout" in capsys.readouterr().err
