"""`kv serve` as a user runs it: a real uvicorn process on a free loopback port, started and
stopped by its own pid."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.servers import free_port


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log


def start_kv(
    tmp_path: Path, env: Mapping[str, str], *, command: tuple[str, ...] = (), port: int = 0
) -> Server:
    """`kv serve` (or `command`, given the port as its last argument) on `port`, else on a
    free one. The log is appended to, so a server restarted on one directory keeps it all."""
    port = port or free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "kv.stderr"
    # The machine's own KV_* settings stay out: each test says what its server runs with.
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("KV_")}
    environ = {**inherited, "KV_PORT": str(port), **env}
    argv = (
        [*command, str(port)] if command else [sys.executable, "-m", "kv.entrypoints.cli", "serve"]
    )
    process = subprocess.Popen(
        argv,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return Server(process, port, log)
        except httpx.TransportError:
            time.sleep(0.05)
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"kv serve did not start: {log.read_text()}")


def stop_kv(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=30)
