"""What both clients do with httpx the same way: its options, its replies, its errors."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from kv.client import core, errors
from kv.client.urls import Endpoint, token_from

DEFAULT_TIMEOUT = 10.0


def client_options(token: str | None, timeout: float) -> dict[str, Any]:
    """The options of the httpx client under a kv client."""
    headers = {"user-agent": f"kv-client (httpx {httpx.__version__})"}
    token = token_from(token)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return {"headers": headers, "timeout": httpx.Timeout(timeout), "follow_redirects": False}


def stream_timeout(timeout: float, read_timeout: float) -> httpx.Timeout:
    """A watch stream's: `timeout` to connect and send, `read_timeout` between two reads."""
    return httpx.Timeout(timeout, read=read_timeout)


def outgoing(
    http: httpx.Client | httpx.AsyncClient, endpoint: Endpoint, request: core.Request
) -> httpx.Request:
    """`request` as the httpx client sends it (with its headers and timeout) to `endpoint`."""
    return http.build_request(
        request.method, endpoint.url(request.target), content=request.body, headers=request.headers
    )


def reply_of(response: httpx.Response, content: bytes) -> core.Reply:
    return core.Reply(response.status_code, response.headers, content)


@contextmanager
def translated(request: core.Request) -> Iterator[None]:
    """httpx's errors as kv's: no answer in time, or none at all."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise errors.TimedOut(
            f"no answer in time ({_describe(exc)})", request=str(request)
        ) from exc
    except httpx.TransportError as exc:
        raise errors.ConnectionFailed(_describe(exc), request=str(request)) from exc
    except httpx.HTTPError as exc:  # a body that cannot be decoded, say
        raise errors.UnexpectedResponse(_describe(exc), request=str(request)) from exc


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
