"""The floor: a bare Starlette app with kv's routes that stores nothing.

What any Starlette + uvicorn service can at best reach on this machine; `bench/run.py`
reports kv's throughput as a ratio to it. It reads the body and answers a fixed record.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

RECORD = b'{"key":"bench","value":{"n":12345,"s":"some text"},"revision":1}'


async def collection(request: Request) -> Response:
    await request.body()
    return Response(RECORD, media_type="application/json", headers={"etag": '"1"'})


async def item(request: Request) -> Response:
    if request.method in ("PUT", "POST"):
        await request.body()
    return Response(RECORD, media_type="application/json", headers={"etag": '"1"'})


app = Starlette(
    routes=[
        Route("/kv", collection, methods=["POST"]),
        Route("/kv/{key:path}", item, methods=["GET", "PUT", "DELETE"]),
    ]
)
