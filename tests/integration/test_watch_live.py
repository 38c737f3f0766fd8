"""GET /watch against real `kv serve` processes on every backend.

- a write made through one kv process reaches the watchers of another (the feed goes
  through the backend);
- the contract's mirroring recipe (watch, wait for `ready`, list, apply the events since
  `ready`) rebuilds an exact copy of a prefix while 8 writers change it: the copy ends equal
  to a final listing;
- a backend that dies sends `event: unavailable` and ends the stream.
"""

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.integration.backends import FAULT_BACKENDS, private_server
from tests.integration.test_serve import Server, start_kv, stop_kv
from tests.integration.workload import LIVE_BACKENDS, kv_environment

WAIT = 15.0  # seconds an event may take (a loaded machine; expiry is not involved here)
WRITERS = 8
WRITE_SECONDS = 3.0


class Events:
    """The events of one open watch stream, as (name, data)."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def next(self, within: float = WAIT) -> tuple[str, Any]:
        name = ""
        async with asyncio.timeout(within):
            async for line in self._lines:
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    return name, json.loads(line.removeprefix("data: "))
        return "end", None


@contextlib.asynccontextmanager
async def watch(url: str, prefix: str) -> AsyncIterator[Events]:
    async with (
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=60)) as client,
        client.stream("GET", "/watch", params={"prefix": prefix}) as response,
    ):
        assert response.status_code == 200
        events = Events(response.aiter_lines())
        assert (await events.next())[0] == "ready"
        yield events


def path(key: str) -> str:
    return "/kv/" + quote(key, safe="/")


@pytest.fixture
def servers(
    backend: str, backend_settings: dict[str, Any], tmp_path: Path
) -> Iterator[list[Server]]:
    """Two kv processes on one store (one on memory, which lives in a process)."""
    env = kv_environment(backend, backend_settings, log_level="WARNING")
    started = [start_kv(tmp_path / "one", env)]
    if backend != "memory":
        started.append(start_kv(tmp_path / "two", env))
    yield started
    for server in started:
        stop_kv(server)


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
async def test_a_write_through_one_process_reaches_the_watchers_of_another(
    servers: list[Server],
) -> None:
    watched, writer = servers[0], servers[-1]
    prefix = f"live-{uuid.uuid4().hex[:8]}/"
    async with (
        watch(watched.url, prefix) as events,
        httpx.AsyncClient(base_url=writer.url, timeout=10) as client,
    ):
        await client.post("/kv", json={"key": prefix + "a", "value": 1})
        await client.put(path(prefix + "a"), json={"value": 2})
        await client.delete(path(prefix + "a"))
        assert await events.next() == ("put", {"key": prefix + "a", "value": 1, "revision": 1})
        assert await events.next() == ("put", {"key": prefix + "a", "value": 2, "revision": 2})
        deleted = {"key": prefix + "a", "revision": 2, "reason": "deleted"}
        assert await events.next() == ("delete", deleted)


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
async def test_list_then_watch_mirrors_a_prefix_while_eight_writers_change_it(
    servers: list[Server],
) -> None:
    prefix = f"mirror-{uuid.uuid4().hex[:8]}/"
    keys = [prefix + f"{{m}}{n}" for n in range(20)]  # one tag: txn stays in one slot
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=10) as seeder:
        for key in keys[::2]:  # the prefix is not empty when the mirror starts
            await seeder.post("/kv", json={"key": key, "value": "seed"})
    stop = asyncio.Event()

    async def writer(number: int) -> int:
        rng = random.Random(number)
        done = 0
        url = servers[number % len(servers)].url  # through every process
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            while not stop.is_set():
                key = rng.choice(keys)
                roll = rng.random()
                if roll < 0.3:
                    await client.post("/kv", json={"key": key, "value": [number, done]})
                elif roll < 0.6:
                    await client.put(f"/v1/{quote(key, safe='')}", json={"value": done})
                elif roll < 0.8:
                    await client.delete(path(key))
                else:
                    other = rng.choice(keys)
                    ops = [{"op": "put", "key": key, "value": "txn"}]
                    if other != key:
                        ops.append({"op": "delete", "key": other})
                    await client.post("/txn", json={"ops": ops})
                done += 1
        return done

    mirror: dict[str, tuple[Any, int]] = {}
    async with watch(servers[0].url, prefix) as events:
        writers = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
        await asyncio.sleep(0.2)  # the writers are busy while the mirror lists
        async with httpx.AsyncClient(base_url=servers[0].url, timeout=10) as reader:
            page = (await reader.get("/kv", params={"prefix": prefix, "values": "true"})).json()
            assert page["next"] is None
            mirror = {item["key"]: (item["value"], item["revision"]) for item in page["items"]}
            await asyncio.sleep(WRITE_SECONDS)
            stop.set()
            assert sum(await asyncio.gather(*writers)) > 100
            final = (await reader.get("/kv", params={"prefix": prefix, "values": "true"})).json()
        truth = {item["key"]: (item["value"], item["revision"]) for item in final["items"]}
        # Apply every event, in order, until the copy equals the final listing (it must,
        # once the events of the last changes have arrived; none comes after them).
        while mirror != truth:
            name, data = await events.next()
            if name == "put":
                mirror[data["key"]] = (data["value"], data["revision"])
            elif name == "delete":
                mirror.pop(data["key"], None)
            else:
                pytest.fail(f"the stream ended with {name}: {data}")


@pytest.mark.parametrize("fault_backend", FAULT_BACKENDS)
async def test_a_dead_backend_sends_unavailable_and_ends_the_stream(
    fault_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = private_server(request, fault_backend)
    kv = start_kv(tmp_path, kv_environment(fault_backend, server.settings(), backend_timeout=1))
    try:
        async with watch(kv.url, "") as events:
            server.kill()
            assert (await events.next())[0] == "unavailable"
            assert (await events.next())[0] == "end"
    finally:
        stop_kv(kv)
