"""Assertions and helpers that more than one suite uses."""

import time
from collections.abc import Awaitable
from typing import Any

import httpx


def assert_problem(response: httpx.Response, status: int, key: str | None = None) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with `status` (about `key`, if given), and leaks no
    traceback or source path; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["type"].startswith("urn:kv:problem:")
    assert isinstance(body["detail"], str) and body["detail"]
    if key is not None:
        assert body["key"] == key
    assert "Traceback" not in response.text and ".py" not in response.text
    return body


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response to `request` and the seconds it took."""
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started
