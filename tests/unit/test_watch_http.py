"""GET /watch through the ASGI app on the memory backend: the stream, its limits and its log.

httpx's ASGI transport waits for a whole response, so these tests drive the app directly:
`Stream` sends the request, collects what the app sends, and says when the client leaves.
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from dependency_injector import providers
from starlette.types import ASGIApp, Message

from kv.adapters.memory import MemoryRepository
from kv.container import Settings, build_container
from kv.domain.errors import Failure, StorageUnavailable
from kv.domain.model import Change
from kv.entrypoints import watching
from kv.entrypoints.http import create_app


class Stream:
    """One GET request to the app whose response is read event by event."""

    def __init__(self, app: ASGIApp, path: str, *, reading: bool = True) -> None:
        path, _, query = path.partition("?")
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"kv.test")],
            "client": ("127.0.0.1", 1),
            "server": ("kv.test", 80),
        }
        self.app = app
        self.left = asyncio.Event()
        self.reading = asyncio.Event()  # cleared: the client does not read (send blocks)
        if reading:
            self.reading.set()
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.buffer = b""
        self.bodies: list[bytes] = []  # every body chunk the app sent, as it sent it
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Stream":
        self.task = asyncio.ensure_future(self.app(self.scope, self._receive, self._send))
        return self

    async def __aexit__(self, *_: object) -> None:
        self.left.set()
        assert self.task is not None
        async with asyncio.timeout(5):
            await self.task

    async def _receive(self) -> Message:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        await self.reading.wait()
        if message["type"] == "http.response.body":
            self.bodies.append(message.get("body", b""))
        await self.messages.put(message)

    async def start(self) -> Message:
        async with asyncio.timeout(5):
            return await self.messages.get()

    async def event(self, within: float = 5.0) -> tuple[str, Any]:
        """The next event: (name, decoded data); ("", comment) for a comment line."""
        async with asyncio.timeout(within):
            while b"\n\n" not in self.buffer:
                message = await self.messages.get()
                assert message["type"] == "http.response.body"
                self.buffer += message.get("body", b"")
                if not message.get("more_body", False) and b"\n\n" not in self.buffer:
                    return "end", None
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        if block.startswith(b":"):
            return "", block[1:].strip().decode()
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        return fields[b"event"].decode(), orjson.loads(fields[b"data"])


@contextlib.asynccontextmanager
async def running(settings: Settings, **overrides: Any) -> AsyncIterator[tuple[ASGIApp, Any]]:
    container = build_container(settings)
    for name, provider in overrides.items():
        getattr(container, name).override(provider)
    app = create_app(settings, container=container)
    async with LifespanManager(app) as manager:
        yield (
            manager.app,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://kv.test"
            ),
        )


async def test_ready_then_each_matching_change_in_order() -> None:
    async with (
        running(Settings()) as (app, client),
        Stream(app, "/watch?prefix=app/") as stream,
    ):
        start = await stream.start()
        assert start["status"] == 200
        assert dict(start["headers"])[b"content-type"].startswith(b"text/event-stream")
        assert await stream.event() == ("ready", {"prefix": "app/"})
        await client.post("/kv", json={"key": "app/a", "value": {"x": 1}})
        await client.post("/kv", json={"key": "other", "value": 1})  # not watched
        await client.put("/kv/app/a", json={"value": [2]})
        await client.delete("/kv/app/a")
        assert await stream.event() == (
            "put",
            {"key": "app/a", "value": {"x": 1}, "revision": 1},
        )
        assert await stream.event() == ("put", {"key": "app/a", "value": [2], "revision": 2})
        deleted = {"key": "app/a", "revision": 2, "reason": "deleted"}
        assert await stream.event() == ("delete", deleted)


async def test_a_key_watch_sees_that_key_only() -> None:
    async with running(Settings()) as (app, client), Stream(app, "/watch?key=a%20b") as stream:
        await stream.start()
        assert await stream.event() == ("ready", {"key": "a b"})
        await client.post("/kv", json={"key": "a b/c", "value": 1})
        await client.post("/kv", json={"key": "a b", "value": 2})
        assert await stream.event() == ("put", {"key": "a b", "value": 2, "revision": 1})


async def test_an_idle_stream_sends_a_comment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watching, "HEARTBEAT_SECONDS", 0.05)
    async with running(Settings()) as (app, _), Stream(app, "/watch?prefix=") as stream:
        await stream.start()
        assert (await stream.event())[0] == "ready"
        assert (await stream.event())[0] == ""


@pytest.mark.parametrize(
    "query", ["", "?prefix=a&key=b", "?key=a/", "?prefix=a&prefix=b", "?prefix=a&limit=3"]
)
async def test_bad_watches_are_400(query: str) -> None:
    async with running(Settings()) as (_, client):
        response = await client.get("/watch" + query)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_over_the_watcher_limit_is_503() -> None:
    async with running(Settings(max_watchers=1)) as (app, client):
        async with Stream(app, "/watch?prefix=") as first:
            await first.start()
            response = await client.get("/watch?prefix=")
            assert response.status_code == 503 and "retry-after" in response.headers
            assert "limit of 1 watch streams" in response.json()["detail"]
        # The first stream has ended: its place is free again.
        async with Stream(app, "/watch?prefix=") as again:
            assert (await again.start())["status"] == 200


async def test_a_watcher_that_stops_reading_gets_overflow_and_others_do_not() -> None:
    async with (
        running(Settings()) as (app, client),
        Stream(app, "/watch?prefix=", reading=False) as slow,
        Stream(app, "/watch?prefix=") as fast,
    ):
        await fast.start()
        assert (await fast.event())[0] == "ready"
        for i in range(10_050):
            await client.put("/v1/k", json={"value": i})
            await asyncio.sleep(0)  # a reading client gets its turn (ASGI calls never yield)
        slow.reading.set()
        await slow.start()
        names = [(await slow.event())[0] for _ in range(3)]
        assert names[0] == "ready" and "overflow" in names
        revisions = [(await fast.event())[1]["revision"] for _ in range(10_050)]
        assert revisions == list(range(1, 10_051))


class FailingFeed(MemoryRepository):
    """A store whose change feed subscribes, then fails as a lost backend connection does."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = asyncio.Event()

    async def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        yield ()
        await self.fail.wait()
        raise StorageUnavailable("redis", Failure.UNREACHABLE)


async def test_a_feed_failure_sends_unavailable_and_ends_the_stream() -> None:
    store = FailingFeed()
    async with (
        running(Settings(), store=providers.Object(store)) as (app, _),
        Stream(app, "/watch?prefix=") as stream,
    ):
        await stream.start()
        assert (await stream.event())[0] == "ready"
        store.fail.set()
        assert (await stream.event())[0] == "unavailable"
        assert (await stream.event())[0] == "end"


async def test_opening_and_closing_are_logged(lines: list[str]) -> None:
    async with running(Settings()) as (app, client), Stream(app, "/watch?prefix=p/") as stream:
        await stream.start()
        await stream.event()
        await client.post("/kv", json={"key": "p/1", "value": 1})
        await stream.event()
    watch = [line for line in lines if "| watch " in line]
    assert len(watch) == 2, watch
    assert 'watch key="p/" outcome=ok status=200' in watch[0] and 'phase="open"' in watch[0]
    assert 'phase="closed"' in watch[1] and 'ended="client"' in watch[1]
    assert "events=1" in watch[1]


async def test_two_watchers_get_one_encoding_of_each_change() -> None:
    async with (
        running(Settings()) as (app, client),
        Stream(app, "/watch?prefix=") as first,
        Stream(app, "/watch?key=k") as second,
    ):
        for stream in (first, second):
            await stream.start()
            await stream.event()
        await client.post("/kv", json={"key": "k", "value": {"x": 1}})
        expected = ("put", {"key": "k", "value": {"x": 1}, "revision": 1})
        assert await first.event() == expected
        assert await second.event() == expected
        assert first.bodies[-1] is second.bodies[-1]  # the same bytes, encoded once


def test_events_are_cached_by_change_up_to_a_size_and_a_count() -> None:
    small = Change("k", 1, "1")
    assert watching.event(small) is watching.event(small)
    assert watching.event(small) is not watching.event(Change("k", 1, "1"))  # another change
    large = Change("k", 1, '"' + "x" * watching._CACHED_EVENT_BYTES + '"')
    assert watching.event(large) == watching.event(large)
    assert watching.event(large) is not watching.event(large)  # encoded each time
    for revision in range(2 * watching._CACHED_EVENTS):
        watching.event(Change("k", revision, "1"))
    assert len(watching._events_of) == watching._CACHED_EVENTS
