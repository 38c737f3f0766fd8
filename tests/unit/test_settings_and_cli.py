"""Configuration from the environment, and `kv serve`'s refusals."""

import subprocess
import sys

import pytest

from kv.container import ConfigError, Settings
from kv.entrypoints.cli import main


def test_defaults_match_the_contract() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.backend, settings.host, settings.port, settings.workers) == (
        "memory",
        "127.0.0.1",
        8000,
        1,
    )
    assert settings.tarantool_url == "127.0.0.1:3301" and settings.tarantool_space == "kv"
    assert settings.redis_url == "redis://127.0.0.1:6379/0" and settings.redis_prefix == "kv:"
    assert settings.redis_cluster is False and settings.backend_timeout == 2.0
    assert settings.max_body_bytes == 1048576 and settings.log_level == "INFO"
    assert settings.log_format == "text" and settings.log_file is None
    assert settings.enable_reset is False and settings.auth_token is None


def test_every_variable_is_read() -> None:
    environ = {
        "KV_HOST": "0.0.0.0",
        "KV_PORT": "9000",
        "KV_TARANTOOL_URL": "tarantool://u:p@db:3302",
        "KV_TARANTOOL_SPACE": "things",
        "KV_REDIS_URL": "rediss://:pw@cache:6380/2",
        "KV_REDIS_PREFIX": "app:",
        "KV_REDIS_CLUSTER": "true",
        "KV_BACKEND_TIMEOUT": "0.5",
        "KV_MAX_BODY_BYTES": "2048",
        "KV_LOG_LEVEL": "debug",
        "KV_LOG_FORMAT": "JSON",
        "KV_LOG_FILE": "/var/log/kv/kv.log",
        "KV_ENABLE_RESET": "true",
        "KV_AUTH_TOKEN": "t",
    }
    settings = Settings.from_env(environ)
    assert settings == Settings(
        host="0.0.0.0",
        port=9000,
        tarantool_url="tarantool://u:p@db:3302",
        tarantool_space="things",
        redis_url="rediss://:pw@cache:6380/2",
        redis_prefix="app:",
        redis_cluster=True,
        backend_timeout=0.5,
        max_body_bytes=2048,
        log_level="DEBUG",
        log_format="json",
        log_file="/var/log/kv/kv.log",
        enable_reset=True,
        auth_token="t",
    )


def test_flags_override_the_environment() -> None:
    settings = Settings.from_env({"KV_PORT": "9000", "KV_HOST": "::1"}, port=9100, host=None)
    assert (settings.port, settings.host) == (9100, "::1")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KV_BACKEND": "mongo"}, "valid ones: memory"),
        ({"KV_PORT": "http"}, "KV_PORT='http' is not a whole number"),
        ({"KV_PORT": "70000"}, "not a TCP port"),
        ({"KV_REDIS_CLUSTER": "maybe"}, "not a boolean"),
        ({"KV_BACKEND_TIMEOUT": "0"}, "must be above 0"),
        ({"KV_MAX_BODY_BYTES": "0"}, "at least 1"),
        ({"KV_LOG_FORMAT": "xml"}, "text, json"),
        ({"KV_LOG_LEVEL": "LOUD"}, "KV_LOG_LEVEL"),
        ({"KV_WORKERS": "2"}, "memory backend lives in one process"),
        ({"KV_WORKERS": "0"}, "at least 1"),
    ],
)
def test_bad_values_are_refused_with_a_message(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_serve_refuses_an_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--backend", "mongo"]) == 2
    error = capsys.readouterr().err
    assert "mongo" in error and "valid ones: memory" in error


def test_serve_refuses_memory_with_several_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    assert "KV_WORKERS must be 1" in capsys.readouterr().err


def test_the_console_script_reports_a_bad_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kv.entrypoints.cli", "serve"],
        env={"KV_BACKEND": "nope", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KV_BACKEND='nope'" in result.stderr and "Traceback" not in result.stderr


def test_importing_the_app_does_no_io() -> None:
    """`kv.entrypoints.http:app` is built at import; only the lifespan may connect."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('I/O at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import kv.entrypoints.http as h\n"
        "print(type(h.app).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"KV_BACKEND": "memory", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Starlette"


def test_the_served_app_freezes_its_start_up_heap_and_a_test_app_does_not() -> None:
    """The app `uvicorn kv.entrypoints.http:app` serves (and `kv serve`'s) moves what start-up
    left alive out of the cyclic collector's reach (#19); an app built by `create_app()`
    alone, as the tests build hundreds, leaves the collector as it was. In a subprocess, so
    that this test process's heap is not frozen."""
    code = (
        "import asyncio, gc\n"
        "from asgi_lifespan import LifespanManager\n"
        "import kv.entrypoints.http as h\n"
        "async def frozen(app):\n"
        "    async with LifespanManager(app):\n"
        "        return gc.get_freeze_count()\n"
        "print(asyncio.run(frozen(h.create_app())), gc.get_freeze_count())\n"
        "print(asyncio.run(frozen(h.app)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"KV_BACKEND": "memory", "KV_LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    test_app, served_app = result.stdout.splitlines()
    assert test_app == "0 0"
    assert int(served_app) > 10_000  # modules, the app, the container: all of start-up
