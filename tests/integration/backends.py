"""The live backends' servers, for the suites that stop, kill or restart them.

Each backend's plugin (tests/servers/<backend>.py) provides `private_<backend>_server`: a
server of the test's own, started from the shipped configuration (deploy/), with
`settings()`, `stop()` (SIGTERM), `kill()` (SIGKILL) and `start()` (again, on the same data
directory and port), and optionally `pause()` / `resume()` (SIGSTOP / SIGCONT).
"""

from typing import Any, Protocol

import pytest

from kv.container import BACKENDS

# The backends whose servers these suites crash. A backend not yet in kv.container.BACKENDS
# (its branch has not landed) is skipped, saying so; once it is there, its fixture must be too.
FAULT_BACKENDS = ["tarantool", "redis"]


class BackendServer(Protocol):
    def settings(self) -> dict[str, Any]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


def private_server(request: pytest.FixtureRequest, backend: str) -> BackendServer:
    if backend not in BACKENDS:
        pytest.skip(f"the {backend} backend has not landed on this branch yet")
    server: BackendServer = request.getfixturevalue(f"private_{backend}_server")
    return server
