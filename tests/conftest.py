"""Fixtures shared by every suite.

`backend` names the backend a test runs on: "memory" here; a suite that runs on live servers
overrides it (tests/integration/conftest.py) and `backend_settings` then asks for the
session fixture `<backend>_server`, which starts that server on a free port.
"""

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from kv.container import Settings
from kv.domain.model import Key
from kv.entrypoints.http import create_app

# The live servers' fixtures (`<backend>_server`), one plugin per backend, one line each.
pytest_plugins = [
    "tests.servers.tarantool",
    "tests.servers.redis",
]


@pytest.fixture
def backend() -> str:
    return "memory"


@pytest.fixture
def backend_settings(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    """The settings that point the service at a live server for `backend` (none for memory)."""
    if backend == "memory":
        return {}
    server = request.getfixturevalue(f"{backend}_server")
    settings: dict[str, Any] = server.settings()
    return settings


@pytest.fixture
def settings(backend: str, backend_settings: dict[str, Any]) -> Settings:
    # A test-only backend name ("redis_cluster") maps to a real one in its server's settings.
    return Settings(**{"backend": backend, **backend_settings})


Unique = Callable[[str], Key]


@pytest.fixture
def unique() -> Unique:
    """Keys no other test uses, so suites can share one live server."""
    prefix = uuid.uuid4().hex[:10]

    def make(name: str = "k") -> Key:
        return Key(f"{prefix}/{name}")

    return make


async def open_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://kv.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app on `settings`, lifespan run, no network."""
    async for client in open_client(settings):
        yield client


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long variants of the reliability tests (as does KV_SOAK=1)",
    )


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    """Whether to run the long variant: `pytest --soak` or KV_SOAK=1."""
    return bool(request.config.getoption("--soak")) or os.environ.get("KV_SOAK") == "1"
