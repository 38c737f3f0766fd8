"""The live backends' servers, for the suites that stop, kill or restart them.

Each backend's plugin (tests/servers/<backend>.py) provides a server of the test's own,
started from the shipped configuration (deploy/), with `settings()`, `stop()` (SIGTERM),
`kill()` (SIGKILL) and `start()` (again, on the same data directory and port), and optionally
`pause()` / `resume()` (SIGSTOP / SIGCONT).
"""

import time
from typing import Any, Protocol

import pytest
import redis

# The backends whose servers these suites crash, and the fixture of a server of one's own.
FAULT_FIXTURES = {
    "tarantool": "private_tarantool_server",
    "redis": "disposable_redis_server",
    "redis_cluster": "disposable_redis_cluster_server",
}
FAULT_BACKENDS = list(FAULT_FIXTURES)


class BackendServer(Protocol):
    def settings(self) -> dict[str, Any]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


def private_server(request: pytest.FixtureRequest, backend: str) -> BackendServer:
    """A server of this test's own for `backend` (a name of FAULT_FIXTURES)."""
    server: BackendServer = request.getfixturevalue(FAULT_FIXTURES[backend])
    return server


# How long before a kill -9 an acknowledged write may still be only in the backend's memory.
# Tarantool acknowledges a write once its WAL write(2) is done: nothing. Redis with
# `appendfsync everysec` normally write(2)s before replying too, but while the previous
# second's fsync is still running (a slow or busy disk) it holds its AOF buffer back, for up
# to 2 s by its own rule (counted in whole seconds, so up to 3 s of wall time), and replies.
WRITE_BACK_SECONDS = {"tarantool": 0.0, "redis": 3.0, "redis_cluster": 3.0}


def redis_ports(server: object) -> list[int]:
    """The ports of a Redis server's processes (every node of a cluster); none otherwise."""
    nodes = getattr(server, "nodes", None)
    if nodes is not None:
        return [node.port for node in nodes]
    port = getattr(server, "port", None)
    return [port] if isinstance(port, int) and hasattr(server, "client") else []


def wait_until_written(server: object, within: float = 10.0) -> None:
    """Wait until the backend has handed every acknowledged write to the kernel.

    A no-op for Tarantool (it has before acknowledging). For Redis, until every node reports
    `aof_buffer_length:0`, which Redis's own rule bounds to about 2 s."""
    deadline = time.monotonic() + within
    for port in redis_ports(server):
        with redis.Redis(port=port, socket_timeout=5) as client:
            while client.info("persistence")["aof_buffer_length"] != 0:
                assert time.monotonic() < deadline, f"Redis :{port} kept its AOF buffer"
                time.sleep(0.02)
