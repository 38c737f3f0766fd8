"""The HTTP API on the live backends: the core of CONTRACT.md through the app and a real server.

(A focused set until the unit HTTP suite can be re-run here as a whole.)
"""

import asyncio
from collections.abc import Callable
from urllib.parse import quote

import httpx
import orjson

from kv.container import Settings

ProblemJSON = "application/problem+json"


async def test_create_read_overwrite_delete(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("config/db host")
    url = f"/kv/{quote(key)}"
    value = {"host": "db.local", "port": 5432, "tags": ["a", "é", None], "ratio": 0.5}

    created = await client.post("/kv", json={"key": key, "value": value})
    assert created.status_code == 200
    assert created.json() == {"key": key, "value": value, "revision": 1}
    assert created.headers["etag"] == '"1"'

    read = await client.get(url)
    assert read.status_code == 200
    assert read.json() == {"key": key, "value": value, "revision": 1}

    overwritten = await client.put(url, json={"value": [1, 2]})
    assert overwritten.status_code == 200
    assert overwritten.json() == {"key": key, "value": [1, 2], "revision": 2}
    assert overwritten.headers["etag"] == '"2"'

    deleted = await client.delete(url)
    assert deleted.status_code == 200
    assert deleted.json() == {"key": key, "revision": 2}
    assert (await client.get(url)).status_code == 404
    assert (await client.delete(url)).status_code == 404


async def test_create_of_an_existing_key_is_409_and_keeps_the_value(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("a")
    await client.post("/kv", json={"key": key, "value": "first"})
    response = await client.post("/kv", json={"key": key, "value": "second"})
    assert response.status_code == 409
    assert response.headers["content-type"] == ProblemJSON
    assert response.json()["key"] == key
    assert (await client.get(f"/kv/{key}")).json()["value"] == "first"


async def test_missing_keys_are_404(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("absent")
    for response in (
        await client.get(f"/kv/{key}"),
        await client.put(f"/kv/{key}", json={"value": 1}),
        await client.delete(f"/kv/{key}"),
        await client.put(f"/kv/{key}", json={"value": 1}, headers={"if-match": '"1"'}),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == ProblemJSON
    assert (await client.get(f"/kv/{key}")).status_code == 404  # the PUTs created nothing


async def test_if_match_is_checked_with_the_write(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("cas")
    url = f"/kv/{key}"
    await client.post("/kv", json={"key": key, "value": 0})
    await client.put(url, json={"value": 1})  # revision 2

    stale = await client.put(url, json={"value": "stale"}, headers={"if-match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["key"] == key
    current = await client.put(url, json={"value": 2}, headers={"if-match": '"2"'})
    assert current.status_code == 200
    assert current.json()["revision"] == 3

    for tag in ('"2"', '"0"', '"99999999999999999999999999"', 'W/"3"'):
        refused = await client.delete(url, headers={"if-match": tag})
        assert refused.status_code == 412, tag
    assert (await client.get(url)).json() == {"key": key, "value": 2, "revision": 3}
    deleted = await client.delete(url, headers={"if-match": '"3"'})
    assert deleted.json() == {"key": key, "revision": 3}


async def test_concurrent_creates_let_exactly_one_win(
    client: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    key = unique("race")
    responses = await asyncio.gather(
        *(client.post("/kv", json={"key": key, "value": i}) for i in range(64))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * 63
    (winner,) = (response for response in responses if response.status_code == 200)
    assert (await client.get(f"/kv/{key}")).json() == winner.json()


async def test_a_value_near_the_body_limit_round_trips(
    client: httpx.AsyncClient, settings: Settings, unique: Callable[[str], str]
) -> None:
    # 1e15 is stored as 1000000000000000.0: the stored JSON is almost 4 times the body, which
    # init.lua's memtx_max_tuple_size must allow.
    key = unique("big")
    count = (settings.max_body_bytes - 100) // len(b"1e15,")
    body = b'{"key":%b,"value":[%b]}' % (orjson.dumps(key), b",".join([b"1e15"] * count))
    assert len(body) <= settings.max_body_bytes
    created = await client.post("/kv", content=body)
    assert created.status_code == 200
    read = await client.get(f"/kv/{key}")
    assert read.status_code == 200
    assert read.json()["value"] == [1e15] * count


async def test_ready_answers_when_the_backend_does(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["backend"] == settings.backend
