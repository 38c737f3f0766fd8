from collections.abc import AsyncIterator

import pytest

from kv.container import Settings, build_container
from kv.domain.ports import Repository

# Every backend runs the same suite; the memory adapter is trusted as a fake because it does.
BACKENDS = ["memory", "redis", "redis_cluster"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[Repository]:
    """The repository the container opens for `settings.backend` (so the wiring is tested too)."""
    container = build_container(settings)
    service = await container.service.async_()
    yield service.repository
    closing = container.shutdown_resources()
    if closing is not None:
        await closing
