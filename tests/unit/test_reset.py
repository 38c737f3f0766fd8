"""`/_reset`: absent unless `enable_reset`, then GET or POST deletes every key.

It wipes the whole store, so unlike test_http_v1.py these tests are not meant for a live
server shared with other suites; each builds its own app.
"""

import secrets
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
from loguru import logger

from kv.container import Settings
from tests.conftest import open_client

TOKEN = secrets.token_urlsafe(16)
Unique = Callable[[str], str]


@pytest.fixture
async def reset_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for client in open_client(settings.replace(enable_reset=True)):
        yield client


async def fill(client: httpx.AsyncClient, unique: Unique) -> list[str]:
    keys = [unique(f"k{i}") for i in range(3)]
    for key in keys:
        assert (await client.post("/kv", json={"key": key, "value": key})).status_code == 200
    return keys


async def statuses(client: httpx.AsyncClient, keys: list[str]) -> list[int]:
    return [(await client.get(f"/kv/{key}")).status_code for key in keys]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/_reset", "/_reset/"])
async def test_reset_does_not_exist_by_default(
    client: httpx.AsyncClient, unique: Unique, method: str, path: str
) -> None:
    keys = await fill(client, unique)
    response = await client.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
    assert await statuses(client, keys) == [200, 200, 200]


def test_reset_is_off_unless_enabled() -> None:
    assert Settings().enable_reset is False
    assert Settings.from_env({"KV_ENABLE_RESET": "true"}).enable_reset is True


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ["/_reset", "/_reset/"])
async def test_reset_deletes_every_key_when_enabled(
    reset_client: httpx.AsyncClient, unique: Unique, method: str, path: str
) -> None:
    keys = await fill(reset_client, unique)
    await reset_client.put(f"/v1/{unique('v1')}", json={"value": 1})
    response = await reset_client.request(method, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "reset"}
    assert await statuses(reset_client, [*keys, unique("v1")]) == [404] * 4
    # The store works as before afterwards, revisions starting again at 1.
    response = await reset_client.post("/kv", json={"key": keys[0], "value": 1})
    assert response.json()["revision"] == 1


async def test_reset_of_an_empty_store_is_200(reset_client: httpx.AsyncClient) -> None:
    assert (await reset_client.post("/_reset")).status_code == 200
    assert (await reset_client.post("/_reset")).status_code == 200


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
async def test_reset_other_methods_are_405_and_delete_nothing(
    reset_client: httpx.AsyncClient, unique: Unique, method: str
) -> None:
    keys = await fill(reset_client, unique)
    response = await reset_client.request(method, "/_reset")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert await statuses(reset_client, keys) == [200, 200, 200]


async def test_reset_needs_the_token_when_one_is_set(settings: Settings, unique: Unique) -> None:
    good = {"authorization": f"Bearer {TOKEN}"}
    async for client in open_client(settings.replace(enable_reset=True, auth_token=TOKEN)):
        key = unique("kept")
        await client.post("/kv", json={"key": key, "value": 1}, headers=good)
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            response = await client.post("/_reset", headers=headers)
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"
        assert (await client.get(f"/kv/{key}", headers=good)).status_code == 200
        assert (await client.get("/_reset", headers=good)).status_code == 200
        assert (await client.get(f"/kv/{key}", headers=good)).status_code == 404


async def test_reset_is_logged_as_an_operation(settings: Settings) -> None:
    messages: list[str] = []
    handler = logger.add(messages.append, format="{message}", level="INFO")
    try:
        async for client in open_client(settings.replace(enable_reset=True, log_format="json")):
            await client.post("/_reset")
    finally:
        logger.remove(handler)
    records = [
        orjson.loads(line)
        for message in messages
        for line in message.splitlines()
        if line.startswith("{")
    ]
    assert [(r["operation"], r["key"], r["status"]) for r in records] == [("reset", None, 200)]
