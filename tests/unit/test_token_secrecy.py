"""The bearer token is compared in constant time and never written to a log."""

import hmac
import secrets
from collections.abc import Callable

import httpx
import pytest
from loguru import logger
from starlette.types import Message, Receive, Scope, Send

from kv.container import Settings
from kv.entrypoints import middleware
from tests.conftest import open_client


def new_token() -> str:
    return "kvtok-" + secrets.token_urlsafe(24)


async def exercise(client: httpx.AsyncClient, token: str) -> list[int]:
    """Requests with the right token, wrong ones (one holding the right one inside it), and
    none, over every protected surface and the open endpoints; returns their statuses."""
    right = {"authorization": f"Bearer {token}"}
    wrong = [
        {"authorization": f"Bearer {token}x"},
        {"authorization": f"Bearer x{token}"},
        {"authorization": token},
        {"authorization": f"Basic {token}"},
        {"authorization": "Bearer nope"},
        {},
    ]
    statuses = []
    for headers in [right, *wrong]:
        for method, path, body in [
            ("POST", "/kv", {"key": "k", "value": 1}),
            ("PUT", "/kv/k", {"value": 2}),
            ("GET", "/kv/k", None),
            ("GET", "/kv/missing", None),
            ("PUT", "/v1/k", {"value": 3}),
            ("POST", "/kv", {"key": "k", "vaule": 1}),
            ("DELETE", "/kv/k", None),
            ("GET", "/", None),
            ("GET", "/ready", None),
        ]:
            response = await client.request(method, path, headers=headers, json=body)
            assert token not in response.text and token not in str(response.headers)
            statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_the_token_never_reaches_the_log(fmt: str) -> None:
    token = new_token()
    lines: list[str] = []
    # Everything loguru is given, at every level, with its extras and any exception.
    sink = logger.add(
        lines.append, level="TRACE", format="{level} {message} {extra} {exception}", catch=False
    )
    try:
        settings = Settings(auth_token=token, log_level="TRACE", log_format=fmt)
        async for client in open_client(settings):
            statuses = await exercise(client, token)
    finally:
        logger.remove(sink)
    log = "".join(lines)
    assert 401 in statuses and 200 in statuses and 400 in statuses
    assert "create key=" in log or '"operation":"create"' in log  # the log did run
    assert "kv stopped" in log
    assert token not in log


async def test_the_token_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `==` would stop at the first differing byte, so its time would tell an attacker
    how much of a guess is right; compare_digest's does not depend on where they differ."""
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def recording(given: bytes, expected: bytes) -> bool:
        calls.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", recording)

    async def app(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise AssertionError("not reached without the token")

    async def receive() -> Message:
        return {"type": "http.request"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    guard = middleware.BearerAuth(app, token="t0ken")
    scope = {"type": "http", "path": "/kv/a", "headers": [(b"authorization", b"Bearer t0kex")]}
    await guard(scope, receive, send)
    assert calls == [(b"Bearer t0kex", b"Bearer t0ken")]
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="kv"') in sent[0]["headers"]
