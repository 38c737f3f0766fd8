"""Expiry over HTTP on the memory backend, its clock driven by the test."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from dependency_injector import providers

from kv.adapters.memory import MemoryRepository
from kv.container import Settings, build_container
from kv.entrypoints.http import create_app
from tests.support import assert_problem

START_MS = 1_795_637_700_000  # 2026-11-25T20:15:00.000Z


class Clock:
    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


@contextlib.asynccontextmanager
async def served(clock: Clock) -> AsyncIterator[tuple[httpx.AsyncClient, MemoryRepository]]:
    store = MemoryRepository(clock=clock)
    container = build_container(Settings())
    container.store.override(providers.Object(store))
    app = create_app(Settings(), container=container)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://kv.test"
        ) as client,
    ):
        yield client, store


async def test_a_record_with_a_ttl_shows_when_it_expires_and_is_gone_from_then_on() -> None:
    clock = Clock()
    async with served(clock) as (client, _):
        created = await client.post("/kv", json={"key": "s", "value": 1, "ttl": 2.5})
        assert created.json() == {
            "key": "s",
            "value": 1,
            "revision": 1,
            "expires_at": "2026-11-25T20:15:02.500Z",
        }
        assert (await client.get("/kv/s")).json()["expires_at"] == "2026-11-25T20:15:02.500Z"
        listed = (await client.get("/kv")).json()["items"]
        assert listed == [{"key": "s", "revision": 1, "expires_at": "2026-11-25T20:15:02.500Z"}]
        clock.now += 2499
        assert (await client.get("/kv/s")).status_code == 200
        clock.now += 1  # its expires_at: gone for every request from now on
        assert_problem(await client.get("/kv/s"), 404)
        assert_problem(await client.put("/kv/s", json={"value": 2}), 404)
        assert_problem(await client.delete("/kv/s"), 404)
        assert (await client.get("/kv")).json()["items"] == []
        again = await client.post("/kv", json={"key": "s", "value": 3})
        assert again.json() == {"key": "s", "value": 3, "revision": 1}


async def test_an_overwrite_without_a_ttl_removes_the_expiry() -> None:
    clock = Clock()
    async with served(clock) as (client, _):
        await client.post("/kv", json={"key": "s", "value": 1, "ttl": 1})
        kept = await client.put("/kv/s", json={"value": 2})
        assert kept.json() == {"key": "s", "value": 2, "revision": 2}
        renewed = await client.put("/v1/s", json={"value": 3, "ttl": 0.0011})
        assert renewed.json()["expires_at"] == "2026-11-25T20:15:00.002Z"  # rounded up to ms
        nulled = await client.put("/kv/s", json={"value": 4, "ttl": None})
        assert "expires_at" not in nulled.json()
        clock.now += 10_000
        assert (await client.get("/kv/s")).json()["value"] == 4


@pytest.mark.parametrize("ttl", [0, -1, "5", True, 315_360_000.5, [], {}])
async def test_a_bad_ttl_is_400_and_nothing_is_written(ttl: Any) -> None:
    async with served(Clock()) as (client, store):
        await client.post("/kv", json={"key": "kept", "value": 1})
        for method, path, body in (
            ("POST", "/kv", {"key": "new", "value": 1, "ttl": ttl}),
            ("PUT", "/kv/kept", {"value": 2, "ttl": ttl}),
            ("PUT", "/v1/kept", {"value": 2, "ttl": ttl}),
        ):
            problem = assert_problem(await client.request(method, path, json=body), 400)
            assert "ttl" in problem["detail"]
        assert len(store) == 1
        assert (await client.get("/kv/kept")).json() == {"key": "kept", "value": 1, "revision": 1}


async def test_ten_years_is_the_longest_ttl() -> None:
    async with served(Clock()) as (client, _):
        created = await client.post("/kv", json={"key": "k", "value": 1, "ttl": 315_360_000})
        assert created.json()["expires_at"] == "2036-11-22T20:15:00.000Z"


async def test_a_delete_answer_stays_key_and_revision() -> None:
    async with served(Clock()) as (client, _):
        await client.post("/kv", json={"key": "k", "value": 1, "ttl": 60})
        assert (await client.delete("/kv/k")).json() == {"key": "k", "revision": 1}
