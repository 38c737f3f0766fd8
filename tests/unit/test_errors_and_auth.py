"""Backend failures, unexpected errors and the bearer token, through the ASGI app."""

from collections.abc import AsyncIterator

import httpx
import pytest
from dependency_injector import providers

from kv.adapters.memory import MemoryRepository
from kv.container import Settings, build_container
from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Record
from tests.conftest import open_client
from tests.support import assert_problem


class UnavailableRepository(MemoryRepository):
    """Fails every call the way an adapter reports a dead backend."""

    async def get(self, key: str) -> Record | None:
        raise StorageUnavailable("redis", Failure.TIMEOUT) from ConnectionError(
            "driver secret: 10.0.0.7:3301 refused"
        )

    async def create(self, key: str, value: str, *, ttl_ms: int | None = None) -> Record | None:
        return await self.get(key)

    async def ping(self) -> None:
        await self.get("")


class BrokenRepository(MemoryRepository):
    async def get(self, key: str) -> Record | None:
        raise RuntimeError("internal detail /srv/kv/secret.py line 3")


async def client_on(
    repository: MemoryRepository, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    container = build_container(settings)
    container.repository.override(providers.Object(repository))
    from asgi_lifespan import LifespanManager

    from kv.entrypoints.http import create_app

    app = create_app(settings, container=container)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
            base_url="http://kv.test",
        ) as client,
    ):
        yield client


async def test_an_unavailable_backend_is_503_with_retry_after_and_no_driver_text() -> None:
    async for client in client_on(UnavailableRepository(), Settings()):
        for response in (
            await client.get("/kv/a"),
            await client.post("/kv", json={"key": "a", "value": 1}),
        ):
            body = assert_problem(response, 503)
            assert response.headers["retry-after"].isdigit()
            assert "secret" not in response.text and "10.0.0.7" not in response.text
            assert body["detail"] == "the Redis backend did not answer within 2 s"
        ready = await client.get("/ready")
        assert_problem(ready, 503)
        assert (await client.get("/health")).status_code == 200


async def test_an_unexpected_error_is_a_500_problem_without_internals() -> None:
    async for client in client_on(BrokenRepository(), Settings()):
        response = await client.get("/kv/a")
        assert_problem(response, 500)
        assert "secret" not in response.text and "RuntimeError" not in response.text
        assert (await client.get("/health")).status_code == 200


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    async for client in open_client(Settings(auth_token="s3cret-token", enable_reset=True)):
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": "s3cret-token"},
        {"authorization": "Basic s3cret-token"},
        {"authorization": "Bearer s3cret-token "},
    ],
)
async def test_data_paths_need_the_bearer_token(
    guarded: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, path in [
        ("GET", "/kv/a"),
        ("POST", "/kv"),
        ("PUT", "/kv/a"),
        ("DELETE", "/kv/a"),
        ("GET", "/v1/a"),
        ("POST", "/_reset"),
        ("GET", "/kv/"),
    ]:
        response = await guarded.request(
            method, path, headers=headers, json={"key": "a", "value": 1}
        )
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "s3cret" not in response.text


async def test_the_right_token_opens_the_data_paths(guarded: httpx.AsyncClient) -> None:
    auth = {"authorization": "Bearer s3cret-token"}
    created = await guarded.post("/kv", json={"key": "a", "value": 1}, headers=auth)
    assert created.status_code == 200
    assert (await guarded.get("/kv/a", headers=auth)).json()["value"] == 1


async def test_service_endpoints_stay_open_with_a_token(guarded: httpx.AsyncClient) -> None:
    for path in ("/", "/health", "/ready"):
        assert (await guarded.get(path)).status_code == 200
