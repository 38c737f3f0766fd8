"""The operation table is the one description of an operation: an entry added to it (with
its handler) is routed, documented, guarded, logged and counted with no other change."""

import httpx
from asgi_lifespan import LifespanManager
from starlette.responses import Response

from kv.container import Settings
from kv.entrypoints.handlers import json_response
from kv.entrypoints.http import create_app
from kv.entrypoints.operations import KV, Operation, Success, operations
from kv.entrypoints.requests import Call
from tests.unit.test_metrics import samples, series


async def echo(call: Call) -> Response:
    data, _ = await call.json_object(("key",), ("key",))
    call.key = data["key"]
    return json_response({"echoed": data["key"]})


ECHO = Operation(
    name="echo",
    method="POST",
    path="/echo",
    handler=echo,
    summary="Echo a key",
    tag=KV,
    ok=Success("The key, echoed."),
    errors=(400,),
)


async def test_an_operation_added_to_the_table_is_served_everywhere(lines: list[str]) -> None:
    settings = Settings(auth_token="t0ken")
    app = create_app(settings, table=[*operations(settings), ECHO])
    auth = {"authorization": "Bearer t0ken"}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kv.test") as client:
            routed = await client.post("/echo/", json={"key": "k1"}, headers=auth)
            refused = await client.post("/echo", json={"key": "k1"})
            other = await client.get("/echo", headers=auth)
            document = (await client.get("/openapi.json")).json()
            scraped = samples((await client.get("/metrics")).text)
    assert routed.status_code == 200 and routed.json() == {"echoed": "k1"}
    assert refused.status_code == 401  # a data operation: guarded when a token is set
    assert other.status_code == 405 and other.headers["allow"] == "POST"
    documented = document["paths"]["/echo"]["post"]
    assert documented["operationId"] == "echo" and documented["tags"] == [KV]
    assert set(documented["responses"]) == {"200", "400", "401"}
    assert documented["security"] == [{"bearer": []}]
    counted = series("kv_http_requests_total", route="/echo", method="POST", status="200")
    assert scraped[counted] == 1
    assert scraped[series("kv_http_requests_total", route="/echo", method="POST", status="401")]
    assert any('echo key="k1" outcome=ok status=200' in line for line in lines), lines


async def test_an_operation_not_in_the_table_is_not_served() -> None:
    settings = Settings()
    app = create_app(settings, table=[op for op in operations(settings) if op.name != "delete"])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kv.test") as client:
            response = await client.delete("/kv/a")
            document = (await client.get("/openapi.json")).json()
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD, PUT"
    assert "delete" not in document["paths"]["/kv/{key}"]
