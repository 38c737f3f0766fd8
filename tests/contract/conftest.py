from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kv.container import Settings, build_container, start_service, stop_service
from kv.domain.ports import Repository

# Every backend runs the same suite; the memory adapter is trusted as a fake because it does.
BACKENDS = ["memory", "tarantool", "redis", "redis_cluster"]

Stored = Callable[[str], Awaitable[list[str]]]
"""What a backend physically stores under a key prefix, expired or not: every key that
still has a record, or an entry of kv's own (listing index, expiry index) in the backend,
sorted and without duplicates."""


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


@pytest.fixture
def stored(backend: str, repository: Repository) -> Stored:
    """Looks into the backend behind `repository`, under kv's feet (see `Stored`)."""
    if backend == "memory":

        async def in_memory(prefix: str) -> list[str]:
            keys = {key for key in repository._records if key.startswith(prefix)}  # type: ignore[attr-defined]
            keys |= {key for _, key in repository._expiry if key.startswith(prefix)}  # type: ignore[attr-defined]
            keys |= {key for key in repository._keys if key.startswith(prefix)}  # type: ignore[attr-defined]
            return sorted(keys)

        return in_memory
    pytest.fail(f"no way yet to look into what {backend} stores")
