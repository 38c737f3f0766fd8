"""POST /txn: all or nothing, through the ASGI app on memory."""

from typing import Any

import httpx
import pytest

from kv.container import Settings
from tests.conftest import open_client
from tests.support import assert_problem


async def txn(client: httpx.AsyncClient, *ops: dict[str, Any]) -> httpx.Response:
    return await client.post("/txn", json={"ops": list(ops)})


async def test_every_kind_of_operation_answers_in_order(client: httpx.AsyncClient) -> None:
    await client.post("/kv", json={"key": "b", "value": 1})
    await client.post("/kv", json={"key": "c", "value": 1})
    await client.post("/kv", json={"key": "d", "value": {"n": 4}})
    await client.post("/kv", json={"key": "e", "value": 5})
    response = await txn(
        client,
        {"op": "create", "key": "a", "value": [1]},
        {"op": "put", "key": "b", "value": 2, "if_revision": 1},
        {"op": "delete", "key": "c"},
        {"op": "get", "key": "d"},
        {"op": "get", "key": "nope"},
        {"op": "check", "key": "e", "revision": 1},
        {"op": "check", "key": "gone", "revision": None},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "results": [
            {"key": "a", "value": [1], "revision": 1},
            {"key": "b", "value": 2, "revision": 2},
            {"key": "c", "revision": 1},
            {"key": "d", "value": {"n": 4}, "revision": 1},
            None,
            {"key": "e", "revision": 1},
            {"key": "gone", "revision": None},
        ]
    }
    assert (await client.get("/kv/c")).status_code == 404


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        ({"op": "create", "key": "x", "value": 2}, "exists"),
        ({"op": "check", "key": "x", "revision": None}, "exists"),
        ({"op": "put", "key": "y", "value": 2}, "not_found"),
        ({"op": "delete", "key": "y", "if_revision": 3}, "not_found"),
        ({"op": "check", "key": "y", "revision": 1}, "not_found"),
        ({"op": "put", "key": "x", "value": 2, "if_revision": 2}, "revision_mismatch"),
        ({"op": "check", "key": "x", "revision": 5}, "revision_mismatch"),
    ],
)
async def test_a_failed_condition_is_409_naming_the_operation_and_nothing_is_written(
    client: httpx.AsyncClient, op: dict[str, Any], reason: str
) -> None:
    await client.post("/kv", json={"key": "x", "value": 1})
    response = await txn(client, {"op": "create", "key": "new", "value": 1}, op)
    body = assert_problem(response, 409, key=op["key"])
    assert body["index"] == 1 and body["reason"] == reason
    assert set(body) == {"type", "title", "status", "detail", "index", "key", "reason"}
    assert (await client.get("/kv/new")).status_code == 404
    assert (await client.get("/kv/x")).json()["revision"] == 1


@pytest.mark.parametrize(
    ("body", "index"),
    [
        ({}, None),
        ({"ops": []}, None),
        ({"ops": [{"op": "get", "key": "a"}] * 129}, None),
        ({"ops": "get"}, None),
        ({"ops": [{"op": "get", "key": "a"}], "extra": 1}, None),
        ({"ops": [{"op": "get", "key": "a"}, {"op": "frob", "key": "b"}]}, 1),
        ({"ops": [{"op": "get", "key": "a", "value": 1}]}, 0),
        ({"ops": [{"op": "put", "key": "a"}]}, 0),
        ({"ops": [{"op": "get", "key": "a"}, {"op": "get", "key": "a"}]}, 1),
        ({"ops": [{"op": "get", "key": "a/"}]}, 0),
        ({"ops": [{"op": "create", "key": "a", "value": 1, "ttl": 0}]}, 0),
        ({"ops": [{"op": "put", "key": "a", "value": 1, "if_revision": 0}]}, 0),
        ({"ops": [{"op": "check", "key": "a", "revision": "1"}]}, 0),
        ({"ops": [{"op": {}, "key": "a"}]}, 0),
        ({"ops": [7]}, 0),
    ],
)
async def test_a_malformed_transaction_is_400_naming_the_operation(
    client: httpx.AsyncClient, body: dict[str, Any], index: int | None
) -> None:
    problem = assert_problem(await client.post("/txn", json=body), 400)
    assert problem.get("index") == index, problem
    if index is not None:
        assert f"operation {index}" in problem["detail"]


async def test_a_transaction_is_logged_with_its_operations_and_written_keys(
    lines: list[str],
) -> None:
    async for client in open_client(Settings()):
        await txn(
            client,
            {"op": "create", "key": "a", "value": 1},
            {"op": "get", "key": "b"},
            {"op": "create", "key": "c", "value": 1},
        )
        await txn(client, {"op": "check", "key": "zz", "revision": 3})
    logged = [line for line in lines if "| txn " in line]
    assert len(logged) == 2, logged
    assert "outcome=ok status=200" in logged[0] and "ops=3" in logged[0]
    assert 'written=["a","c"]' in logged[0]
    assert "outcome=not_found status=409" in logged[1]
