"""The live backends' servers, for the suites that stop, kill or restart them.

Each backend's plugin (tests/servers/<backend>.py) provides a server of the test's own,
started from the shipped configuration (deploy/), with `settings()`, `stop()` (SIGTERM),
`kill()` (SIGKILL) and `start()` (again, on the same data directory and port), and optionally
`pause()` / `resume()` (SIGSTOP / SIGCONT).
"""

from typing import Any, Protocol

import pytest

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
