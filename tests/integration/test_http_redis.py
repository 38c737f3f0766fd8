"""The HTTP API on Redis and on Redis Cluster: the contract's main paths, end to end."""

import asyncio
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest


@pytest.fixture(params=["redis", "redis_cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def url(key: str) -> str:
    return "/kv/" + quote(key, safe="/")


async def test_service_reports_the_redis_backend(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).json()["backend"] == "redis"
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "backend": "redis"}


async def test_create_read_overwrite_delete(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("a b/é")
    created = await client.post("/kv", json={"key": key, "value": {"n": [1, 2.5, None]}})
    assert created.status_code == 200
    assert created.json() == {"key": key, "value": {"n": [1, 2.5, None]}, "revision": 1}
    assert created.headers["etag"] == '"1"'

    again = await client.post("/kv", json={"key": key, "value": 2})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["key"] == key

    overwritten = await client.put(url(key), json={"value": "two"})
    assert overwritten.status_code == 200
    assert overwritten.json() == {"key": key, "value": "two", "revision": 2}

    read = await client.get(url(key))
    assert read.status_code == 200
    assert read.json() == {"key": key, "value": "two", "revision": 2}
    assert read.headers["etag"] == '"2"'

    deleted = await client.delete(url(key))
    assert deleted.status_code == 200
    assert deleted.json() == {"key": key, "revision": 2}
    assert (await client.get(url(key))).status_code == 404
    assert (await client.delete(url(key))).status_code == 404


async def test_missing_key_is_404(client: httpx.AsyncClient, unique: Callable[[str], str]) -> None:
    key = unique("missing")
    assert (await client.get(url(key))).status_code == 404
    put = await client.put(url(key), json={"value": 1})
    assert put.status_code == 404
    assert (await client.get(url(key))).status_code == 404  # PUT created nothing


async def test_if_match_is_checked_with_the_write(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("cas")
    await client.post("/kv", json={"key": key, "value": 0})
    await client.put(url(key), json={"value": 1})

    stale = await client.put(url(key), json={"value": 2}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert (await client.get(url(key))).json()["value"] == 1

    current = await client.put(url(key), json={"value": 2}, headers={"If-Match": '"2"'})
    assert current.status_code == 200
    assert current.json()["revision"] == 3

    assert (await client.delete(url(key), headers={"If-Match": '"2"'})).status_code == 412
    assert (await client.get(url(key))).status_code == 200
    assert (await client.delete(url(key), headers={"If-Match": '"3"'})).status_code == 200
    assert (await client.delete(url(key), headers={"If-Match": '"3"'})).status_code == 404


async def test_concurrent_posts_of_one_key_let_exactly_one_win(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("race")
    responses = await asyncio.gather(
        *(client.post("/kv", json={"key": key, "value": i}) for i in range(64))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * 63
    winner = next(response for response in responses if response.status_code == 200)
    assert (await client.get(url(key))).json() == winner.json()
