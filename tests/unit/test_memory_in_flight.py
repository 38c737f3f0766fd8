"""Memory held by requests waiting for the backend (#20 item 1): only the encoded value.

The memory backend answers without awaiting, so these tests park every write in a
repository that waits for an event, measure what the process holds (tracemalloc) while
they wait, then let them through. README, Limits, states the bound tested here.
"""

import asyncio
import itertools
import json
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from dependency_injector import providers

from kv.adapters.memory import MemoryRepository
from kv.container import Settings, build_container
from kv.domain.model import Key, Record, Stale
from kv.entrypoints.http import create_app

MiB = 1024 * 1024
IN_FLIGHT = 4
# Per request, beyond the value's text: the request's own objects (scope, Call, command,
# coroutines, httpx's side of the exchange), a few KiB; generously.
OVERHEAD = 64 * 1024
# The most memory a value's text can take per byte of body (README, Limits): its compact
# JSON has up to 3.8 characters per byte of body (`9e15,` is written `9000000000000000.0,`)
# and Python stores a string at 4 bytes per character when one of them is beyond U+FFFF.
TEXT_BYTES_PER_BODY_BYTE = 3.8 * 4


class ParkedRepository(MemoryRepository):
    """Writes wait until `release` is set, as they would for a slow backend."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.parked = 0

    async def _park(self) -> None:
        self.parked += 1
        await self.release.wait()

    async def create(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record | None:
        await self._park()
        return await super().create(key, value, ttl_ms=ttl_ms)

    async def replace(
        self,
        key: Key,
        value: str,
        *,
        if_revision: int | None = None,
        ttl_ms: int | None = None,
    ) -> Record | Stale | None:
        await self._park()
        return await super().replace(key, value, if_revision=if_revision, ttl_ms=ttl_ms)

    async def upsert(self, key: Key, value: str, *, ttl_ms: int | None = None) -> Record:
        await self._park()
        return await super().upsert(key, value, ttl_ms=ttl_ms)


@pytest.fixture
async def parked() -> AsyncIterator[tuple[ParkedRepository, httpx.AsyncClient]]:
    settings = Settings()
    repository = ParkedRepository()
    container = build_container(settings)
    container.store.override(providers.Object(repository))
    app = create_app(settings, container=container)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://kv.test", timeout=60
        ) as client,
    ):
        yield repository, client


def value_body(items: bytes, *, tail: bytes = b"", key: bytes | None = None) -> bytes:
    """A body of close to 1 MiB: `items` repeated in the value's array, then `tail`."""
    head = b'{"value":[' if key is None else b'{"key":"%b","value":[' % key
    count = (MiB - len(head) - 2 - len(tail)) // (len(items) + 1)
    return head + b",".join([items] * count) + tail + b"]}"


async def held_while_parked(
    repository: ParkedRepository, requests: Sequence[Callable[[], Awaitable[httpx.Response]]]
) -> tuple[int, list[httpx.Response]]:
    """Bytes the process holds while `requests` all wait for the backend, more than before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.ensure_future(request()) for request in requests]
        while repository.parked < len(tasks):
            assert not any(task.done() for task in tasks), [t.result().text for t in tasks]
            await asyncio.sleep(0.01)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        repository.release.set()
    return held, list(await asyncio.gather(*tasks))


@pytest.mark.parametrize("items", [b"[]", b"{}", b'{"a":[1,2.5,"x"]}'])
async def test_a_write_waiting_for_the_backend_holds_its_value_text_not_the_parsed_value(
    parked: tuple[ParkedRepository, httpx.AsyncClient], items: bytes
) -> None:
    """Before: ~26 MiB held per request for 350k `[]` (the parsed value, alive across the
    backend call); now the value's text, 1 MiB."""
    repository, client = parked
    bodies = [value_body(items, key=b"c%d" % i) for i in range(IN_FLIGHT)]

    def create(body: bytes) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: client.post("/kv", content=body)

    held, responses = await held_while_parked(repository, [create(body) for body in bodies])
    assert all(response.status_code == 200 for response in responses)
    assert held / IN_FLIGHT <= MiB + OVERHEAD, f"{held / IN_FLIGHT / MiB:.1f} MiB per request"


async def test_the_largest_value_text_of_a_body_is_within_the_stated_bound(
    parked: tuple[ParkedRepository, httpx.AsyncClient],
) -> None:
    """The worst case README states: a body of `9e15` (each written out in 18 characters)
    with one character beyond U+FFFF (every character then takes 4 bytes)."""
    repository, client = parked
    body = value_body(b"9e15", tail=',"\U0001f642"'.encode())
    repository.release.set()
    assert (await client.put("/v1/worst", content=b'{"value":1}')).status_code == 200
    repository.release.clear()
    repository.parked = 0
    requests = [
        (lambda: client.put("/v1/worst", content=body)),  # overwrite
        (lambda: client.put("/v1/worst-new", content=body)),  # create
        (lambda: client.put("/kv/worst", content=body)),
    ]
    held, responses = await held_while_parked(repository, requests)
    assert all(response.status_code == 200 for response in responses), responses[0].text
    text = json.dumps(json.loads(body)["value"], separators=(",", ":"), ensure_ascii=False)
    assert len(text) > 3.75 * len(body)  # the shape is as bad as the bound assumes
    per_request = held / len(requests)
    assert per_request <= TEXT_BYTES_PER_BODY_BYTE * MiB + OVERHEAD, per_request / MiB
    assert per_request >= 4 * len(text)  # it is the text that is held, 4 bytes a character


def test_the_stated_factor_is_the_largest_a_number_can_grow() -> None:
    """No number of up to 5 characters (and a comma) grows more than 3.8 times when
    written out as kv stores it; the bound above rests on this. Longer ones grow less: a
    float is written in at most 24 characters, (24 + 1) / (6 + 1) < 3.8, and an integer is
    written as it was sent."""
    worst = 0.0
    for length in range(1, 6):
        for chars in itertools.product("0159eE.-+", repeat=length):
            literal = "".join(chars)
            try:
                number: Any = orjson.loads(literal)
            except orjson.JSONDecodeError:
                continue
            worst = max(worst, (len(orjson.dumps(number)) + 1) / (len(literal) + 1))
    assert worst == 3.8
