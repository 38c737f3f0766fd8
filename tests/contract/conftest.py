from collections.abc import AsyncIterator

import pytest

from kv.container import Settings, build_container, start_service, stop_service
from kv.domain.ports import Repository

# Every backend runs the same suite; the memory adapter is trusted as a fake because it does.
BACKENDS = ["memory", "tarantool", "redis", "redis_cluster"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[Repository]:
    """The repository the container opens for `settings.backend` (so the wiring is tested too)."""
    container = build_container(settings)
    service = await start_service(container)
    yield service.repository
    await stop_service(container)
