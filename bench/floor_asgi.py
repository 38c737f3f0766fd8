"""The raw floor: a bare ASGI function with kv's paths, no framework, that stores nothing.

What any ASGI app can at best reach under uvicorn (httptools, uvloop) on this machine; beside
bench/floor.py (the same answers through Starlette's router, Request and Response) it shows
what the framework itself costs. It reads the body of a PUT or POST and answers the fixed
record that floor.py answers, with the same headers: `POST /kv` and `GET|PUT|DELETE
/kv/{key}` get 200, any other path 404 and any other method 405.
"""

from typing import Any

from starlette.types import Receive, Scope, Send

RECORD = b'{"key":"bench","value":{"n":12345,"s":"some text"},"revision":1}'
_OK: dict[str, Any] = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-length", str(len(RECORD)).encode()),
        (b"content-type", b"application/json"),
        (b"etag", b'"1"'),
    ],
}
_BODY: dict[str, Any] = {"type": "http.response.body", "body": RECORD}
_ITEM_METHODS = ("GET", "PUT", "DELETE")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path, method = scope["path"], scope["method"]
    if path == "/kv":
        allowed = method == "POST"
    elif path.startswith("/kv/"):
        allowed = method in _ITEM_METHODS
    else:
        await _answer(send, 404)
        return
    if not allowed:
        await _answer(send, 405)
        return
    if method in ("PUT", "POST"):
        message = await receive()
        while message.get("more_body", False):
            message = await receive()
    await send(_OK)
    await send(_BODY)


async def _answer(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
