"""Pytest plugin: real Tarantool instances run from `deploy/tarantool/init.lua`.

`tarantool_server` is one instance for the whole session, shared by every test that only
reads and writes its own keys. `private_tarantool_server` is a fresh instance per test, for
tests that stop, kill or pause it. Each runs in its own temporary directory on a free
loopback port, and is stopped by its own pid.
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServerProcess, free_port

INSTANCE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "tarantool" / "init.lua"
START_SECONDS = 30.0
USER = "kv"
PASSWORD = "kv"


class TarantoolServer(ServerProcess):
    """One `tarantool deploy/tarantool/init.lua` process (or `instance_file`), restartable on
    its directory and port."""

    def __init__(
        self,
        directory: Path,
        *,
        env: Mapping[str, str] | None = None,
        instance_file: Path = INSTANCE_FILE,
    ) -> None:
        self.directory = directory
        self.instance_file = instance_file
        self.port = free_port()
        self.log = directory / "tarantool.log"
        # The instance sees none of the caller's KV_* variables, only the ones given here.
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("KV_")}
        self.env |= {
            "KV_TARANTOOL_LISTEN": f"127.0.0.1:{self.port}",
            "KV_TARANTOOL_WORK_DIR": str(directory / "data"),
            "KV_TARANTOOL_USER": USER,
            "KV_TARANTOOL_PASSWORD": PASSWORD,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def settings(self) -> dict[str, Any]:
        """The service settings that point at this instance."""
        return {"tarantool_url": f"{USER}:{PASSWORD}@127.0.0.1:{self.port}"}

    def start(self) -> None:
        """Start the instance (again, on the same data) and return once it accepts connections.

        init.lua listens only after its schema is set up, so accepting means ready.
        """
        assert self.process is None, "already running"
        executable = shutil.which("tarantool")
        if executable is None:
            pytest.fail(
                "the tarantool server is not installed; `make test` installs it "
                "(or: sudo apt-get install tarantool)",
                pytrace=False,
            )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [executable, str(self.instance_file)],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"tarantool exited with {code} at start:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(
                        f"tarantool did not listen within {START_SECONDS} s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)


def run_server(directory: Path, env: Mapping[str, str] | None = None) -> Iterator[TarantoolServer]:
    server = TarantoolServer(directory, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tarantool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TarantoolServer]:
    """The session's shared instance: use unique keys, never stop it."""
    yield from run_server(tmp_path_factory.mktemp("tarantool"))


@pytest.fixture
def private_tarantool_server(tmp_path: Path) -> Iterator[TarantoolServer]:
    """An instance of this test's own, to stop, kill or pause."""
    yield from run_server(tmp_path)
