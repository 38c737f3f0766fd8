"""The client behind a reverse proxy that serves kv under a path prefix
(`http://proxy/kv-api/...` → `http://kv/...`), watch streams included."""

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from kv.client import KeyNotFound, PutEvent, Record, Synced, TxnGet
from tests.client_driver import KINDS, Driver
from tests.servers.kv import start_kv, stop_kv
from tests.unit.test_check import serve_in_thread

PREFIX = b"/kv-api"
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"host"}


class PrefixProxy:
    """Forwards `PREFIX/<path>` to `upstream/<path>` byte for byte (the path as sent,
    percent-escapes and all), streaming the answer; anything else is 404."""

    def __init__(self, upstream: str) -> None:
        self.upstream = httpx.URL(upstream)
        self.paths: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw: bytes = scope["raw_path"]
        if scope["query_string"]:
            raw += b"?" + scope["query_string"]
        self.paths.append(raw)
        if not raw.startswith(PREFIX + b"/"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not proxied"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        url = self.upstream.copy_with(raw_path=raw[len(PREFIX) :])
        forward = asyncio.ensure_future(self._forward(scope["method"], url, headers, body, send))

        async def until_disconnect() -> None:  # a client that leaves ends the upstream request
            while (await receive())["type"] != "http.disconnect":
                pass
            forward.cancel()

        listener = asyncio.ensure_future(until_disconnect())
        with contextlib.suppress(asyncio.CancelledError):
            await forward
        listener.cancel()

    async def _forward(
        self, method: str, url: httpx.URL, headers: list[tuple[bytes, bytes]], body: bytes,
        send: Send,
    ) -> None:  # fmt: skip
        client = httpx.AsyncClient(timeout=httpx.Timeout(10, read=60))
        async with client, client.stream(method, url, headers=headers, content=body) as response:
            kept = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            start = {"type": "http.response.start", "status": response.status_code}
            await send({**start, "headers": kept})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PrefixProxy]]:
    directory: Path = tmp_path_factory.mktemp("proxied")
    server = start_kv(directory, {"KV_BACKEND": "memory", "KV_LOG_LEVEL": "WARNING"})
    app = PrefixProxy(server.url)
    try:
        with serve_in_thread(app) as url:
            yield f"{url}/kv-api", app
    finally:
        stop_kv(server)


@pytest.mark.parametrize("kind", KINDS)
def test_every_operation_through_a_path_prefix(proxy: tuple[str, PrefixProxy], kind: str) -> None:
    url, app = proxy
    key = f"proxied-{kind}/a b/../%2F?"
    with Driver(kind, url) as kv:
        events = kv.watch(f"proxied-{kind}/")
        assert events.next() == Synced("start", 0, 0)
        assert kv.call("create", key, 1) == Record(key, 1, 1)
        assert events.next() == PutEvent(key, 1, 1)
        events.close()
        assert kv.call("put", key, 2).revision == 2
        assert [r.value for r in kv.list(f"proxied-{kind}/", values=True)] == [2]
        assert kv.call("txn", [TxnGet(key)]) == [Record(key, 2, 2)]
        kv.call("delete", key)
        with pytest.raises(KeyNotFound):
            kv.call("get", key)
    assert all(path.startswith(b"/kv-api/") for path in app.paths)
    assert f"/kv-api/kv/proxied-{kind}/a%20b/%2E%2E/%252F%3F".encode() in app.paths
