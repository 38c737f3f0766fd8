"""The live backends: every test here that takes `backend` runs once per server below.

Each name resolves, through `backend_settings`, to the session fixture `<name>_server`.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.test_serve import start_kv, stop_kv

BACKENDS = ["tarantool", "redis", "redis_cluster"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# --- a real `kv serve` per backend, for the client and CLI suites ------------------------------

# kv.client's suites run on memory too: the contract says what every backend must do.
CLIENT_BACKENDS = ["memory", "tarantool", "redis", "redis_cluster"]


def serve_env(settings: dict[str, Any]) -> dict[str, str]:
    """KV_* variables for `kv serve` from Settings fields."""
    return {
        f"KV_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in settings.items()
    }


@dataclass(frozen=True)
class LiveKV:
    backend: str
    url: str
    env: dict[str, str]  # what a second `kv serve` on the same store needs


@pytest.fixture(scope="module", params=CLIENT_BACKENDS)
def live_kv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveKV]:
    """A `kv serve` on each backend, shared by a module's tests (they use unique keys)."""
    backend: str = request.param
    settings = (
        {} if backend == "memory" else request.getfixturevalue(f"{backend}_server").settings()
    )
    env = {
        "KV_BACKEND": backend.partition("_")[0],
        "KV_LOG_LEVEL": "WARNING",
        **serve_env(settings),
    }
    server = start_kv(tmp_path_factory.mktemp(f"kv-{backend}"), env)
    yield LiveKV(backend, server.url, env)
    stop_kv(server)
