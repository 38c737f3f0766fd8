"""Client and AsyncClient over a scripted fake server (httpx.MockTransport, no network):
retries, headers, URLs, httpx's errors, lazy pages, and the watch reconnecting after each
way a stream ends. Every test runs on both clients."""

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from kv.client import (
    Backoff,
    ConnectionFailed,
    DeleteEvent,
    Entry,
    Interrupted,
    KeyNotFound,
    PutEvent,
    Record,
    RetryPolicy,
    Synced,
    TimedOut,
    Unauthorized,
    Unavailable,
)
from tests.client_driver import KINDS, Driver

FAST = Backoff(first=0.001, most=0.01)
Chunk = bytes | Exception | Callable[[], None]


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeKV:
    """A kv server in a dict: GET of keys and listings from `records`, scripted answers for
    other requests (`answers`, by method and path, taken in order), and scripted watch
    streams (`streams`: each a list of byte chunks, exceptions to raise mid-stream, and
    functions to run at that point, e.g. to change the records meanwhile)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.records: dict[str, Record] = {}
        self.answers: dict[tuple[str, str], list[httpx.Response]] = {}
        self.streams: list[list[Chunk] | httpx.Response] = []
        self.requests: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.raw_path.decode().partition("?")[0]
        scripted = self.answers.get((request.method, path))
        if scripted:
            return scripted.pop(0)
        if path.endswith("/watch"):
            stream = self.streams.pop(0)
            if isinstance(stream, httpx.Response):
                return stream
            return httpx.Response(200, content=self._body(stream))
        if path.endswith("/kv") and request.method == "GET":
            query = parse_qs(urlsplit(str(request.url)).query)
            prefix = query.get("prefix", [""])[0]
            items = [r.as_json() for k, r in sorted(self.records.items()) if k.startswith(prefix)]
            return httpx.Response(200, json={"items": items, "next": None})
        key = path.partition("/kv/")[2]
        if request.method == "GET" and key in self.records:
            return httpx.Response(200, json=self.records[key].as_json())
        body = {"status": 404, "title": "Not Found", "detail": "missing", "key": key}
        return httpx.Response(404, json=body)

    def _body(self, chunks: list[Chunk]) -> Iterator[bytes] | AsyncIterator[bytes]:
        def each() -> Iterator[bytes]:
            for chunk in chunks:
                if isinstance(chunk, Exception):
                    raise chunk
                if callable(chunk):
                    chunk()
                else:
                    yield chunk

        if self.kind == "sync":
            return each()

        async def async_each() -> AsyncIterator[bytes]:
            for chunk in each():
                yield chunk

        return async_each()


@pytest.fixture(params=KINDS)
def fake(request: pytest.FixtureRequest) -> FakeKV:
    return FakeKV(request.param)


@pytest.fixture
def client(fake: FakeKV) -> Iterator[Driver]:
    with Driver(fake.kind, "http://kv.test/kv-api/", transport=fake.transport(),
                retry=RetryPolicy(attempts=3, budget=1, default_delay=0)) as driver:  # fmt: skip
        yield driver


def busy(retry_after: str = "0") -> httpx.Response:
    body = {"status": 503, "title": "Service Unavailable", "detail": "the backend is slow"}
    return httpx.Response(503, json=body, headers={"retry-after": retry_after})


RECORD = {"key": "a b", "value": 1, "revision": 1}


# --- requests -------------------------------------------------------------------------------


def test_a_read_is_retried_after_503_and_a_write_is_not(fake: FakeKV, client: Driver) -> None:
    fake.answers[("GET", "/kv-api/kv/a%20b")] = [busy(), busy(), httpx.Response(200, json=RECORD)]
    assert client.call("get", "a b") == Record("a b", 1, 1)
    assert len(fake.requests) == 3
    fake.answers[("PUT", "/kv-api/kv/a%20b")] = [busy(), httpx.Response(200, json=RECORD)]
    with pytest.raises(Unavailable) as caught:
        client.call("put", "a b", 1)
    assert len(fake.requests) == 4
    assert caught.value.retry_after == 0.0
    assert str(caught.value) == "PUT /kv/a%20b answered 503: the backend is slow"


def test_retries_stop_at_the_attempts_and_the_budget(fake: FakeKV, client: Driver) -> None:
    fake.answers[("GET", "/kv-api/kv/k")] = [busy(), busy(), busy(), busy()]
    with pytest.raises(Unavailable):
        client.call("get", "k")
    assert len(fake.requests) == 3  # RetryPolicy(attempts=3)
    fake.answers[("GET", "/kv-api/kv/k")] = [busy("5")]
    with pytest.raises(Unavailable):
        client.call("get", "k")  # 5 s would pass the 1 s budget: raised at once
    assert len(fake.requests) == 4


def test_the_token_and_the_path_prefix(fake: FakeKV, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KV_AUTH_TOKEN", "from-env")
    for token, sent in ((None, "Bearer from-env"), ("given", "Bearer given"), ("", None)):
        driver = Driver(
            fake.kind, "https://kv.test/kv-api", token=token, transport=fake.transport()
        )
        with driver, pytest.raises(KeyNotFound):
            driver.call("get", "x/../y z")
        request = fake.requests[-1]
        assert request.headers.get("authorization") == sent
        assert str(request.url) == "https://kv.test/kv-api/kv/x/%2E%2E/y%20z"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx.ConnectError("refused"), ConnectionFailed),
        (httpx.ReadTimeout("slow"), TimedOut),
        (httpx.RemoteProtocolError("cut"), ConnectionFailed),
    ],
)
def test_httpx_errors_become_connection_errors(
    fake: FakeKV, raised: Exception, expected: type[Exception]
) -> None:
    def fail(_: httpx.Request) -> httpx.Response:
        raise raised

    driver = Driver(fake.kind, "http://kv.test", transport=httpx.MockTransport(fail))
    with driver, pytest.raises(expected) as caught:
        driver.call("delete", "k")
    assert caught.value.request == "DELETE /kv/k"  # type: ignore[attr-defined]


def test_pages_are_fetched_as_the_iteration_goes(fake: FakeKV) -> None:
    pages = [
        {"items": [{"key": "a", "revision": 1}, {"key": "b", "revision": 2}], "next": "c1"},
        {"items": [{"key": "c", "revision": 1}], "next": None},
    ]
    fake.answers[("GET", "/kv")] = [httpx.Response(200, json=page) for page in pages]
    with Driver(fake.kind, "http://kv.test", transport=fake.transport()) as driver:
        items = driver.client.list("", page_size=2)
        if isinstance(items, Iterator):
            assert next(items) == Entry("a", 1)
            assert len(fake.requests) == 1
            assert list(items) == [Entry("b", 2), Entry("c", 1)]
        else:
            assert driver.run(anext(items)) == Entry("a", 1)
            assert len(fake.requests) == 1
            assert driver.run(anext(items)) == Entry("b", 2)
            assert driver.run(anext(items)) == Entry("c", 1)
    assert [r.url.params.get("cursor") for r in fake.requests] == [None, "c1"]


# --- the watch ------------------------------------------------------------------------------


def watch(client: Driver, **options: Any) -> Any:
    return client.watch("p/", backoff=FAST, **options)


def test_after_overflow_the_watch_lists_again_and_hands_out_the_difference(
    fake: FakeKV, client: Driver
) -> None:
    fake.records = {"p/a": Record("p/a", 1, 1), "p/b": Record("p/b", 1, 1)}

    def meanwhile() -> None:
        fake.records = {"p/b": Record("p/b", 1, 1), "p/c": Record("p/c", "new", 1)}

    fake.streams = [
        [sse("ready", {"prefix": "p/"}), sse("put", {"key": "p/b", "value": 2, "revision": 2}),
         sse("overflow", {})],
        [meanwhile, sse("ready", {"prefix": "p/"}),
         sse("delete", {"key": "p/c", "revision": 1, "reason": "expired"})],
    ]  # fmt: skip
    events = watch(client)
    assert events.take(10) == [
        PutEvent("p/a", 1, 1, None, True),
        PutEvent("p/b", 1, 1, None, True),
        Synced("start", 2, 0),
        PutEvent("p/b", 2, 2),
        Interrupted("overflow", "the server ended the stream: this watcher fell too far behind"),
        DeleteEvent("p/a", 1, "resync"),
        PutEvent("p/b", 1, 1, None, True),  # at revision 1 again (recreated): it differs
        PutEvent("p/c", "new", 1, None, True),
        Synced("overflow", 2, 1),
        DeleteEvent("p/c", 1, "expired"),
    ]
    events.close()
    assert fake.requests[0].url.raw_path == b"/kv-api/watch?prefix=p%2F"


def test_a_cut_stream_and_a_503_on_reconnecting_are_outlived(fake: FakeKV, client: Driver) -> None:
    fake.streams = [
        [sse("ready", {}), httpx.ReadError("connection reset")],
        busy("0"),
        [httpx.ConnectError("refused")],
        [sse("ready", {}), sse("put", {"key": "p/x", "value": None, "revision": 1})],
    ]
    events = watch(client, initial=False)
    assert events.next() == Synced("start", 0, 0)
    lost = events.next()
    assert isinstance(lost, Interrupted) and lost.cause == "disconnected"
    assert "connection reset" in lost.detail
    assert events.take(2) == [Synced("disconnected", 0, 0), PutEvent("p/x", None, 1)]
    events.close()
    assert len([r for r in fake.requests if r.url.path.endswith("/watch")]) == 4


def test_unavailable_ends_the_stream_and_a_401_ends_the_watch(fake: FakeKV, client: Driver) -> None:
    fake.streams = [
        [sse("ready", {}), sse("unavailable", {})],
        httpx.Response(401, json={"status": 401, "detail": "this path needs a token"}),
    ]
    events = watch(client)
    assert events.next() == Synced("start", 0, 0)
    assert events.next() == Interrupted(
        "unavailable", "the server ended the stream: its backend or the server is unavailable"
    )
    with pytest.raises(Unauthorized, match="needs a token"):
        events.next()


def test_the_first_connection_must_succeed(fake: FakeKV, client: Driver) -> None:
    fake.streams = [busy("0")]
    with pytest.raises(Unavailable):
        watch(client).next()
    fake.streams = [[sse("overflow", {})]]
    with pytest.raises(ConnectionFailed, match="before it was ready"):
        watch(client).next()


def test_a_watch_gives_up_after_give_up_after(fake: FakeKV, client: Driver) -> None:
    refused: list[Chunk] = [httpx.ConnectError("refused")]
    fake.streams = [[sse("ready", {}), httpx.ReadError("cut")], *[refused] * 1000]
    events = watch(client, give_up_after=0.05)
    assert isinstance(events.take(2)[1], Interrupted)
    with pytest.raises(ConnectionFailed, match="refused"):
        events.next()


def test_a_key_watch_reads_its_key_for_a_baseline(fake: FakeKV, client: Driver) -> None:
    fake.records = {"k": Record("k", "v", 3)}
    fake.streams = [[sse("ready", {"key": "k"})], [sse("ready", {"key": "k"})]]
    events = client.watch(key="k", backoff=FAST)
    assert events.take(2) == [PutEvent("k", "v", 3, None, True), Synced("start", 1, 0)]
    fake.records = {}
    assert events.next().cause == "disconnected"  # type: ignore[union-attr]
    assert events.take(2) == [DeleteEvent("k", 3, "resync"), Synced("disconnected", 0, 1)]
    events.close()
    assert [r.url.raw_path for r in fake.requests if r.method == "GET"][:2] == [
        b"/kv-api/watch?key=k", b"/kv-api/kv/k"
    ]  # fmt: skip
