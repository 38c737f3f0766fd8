"""GET /kv: listing by prefix with cursor paging, through the ASGI app on memory."""

from typing import Any

import httpx
import pytest

from kv.container import Settings
from tests.conftest import open_client
from tests.support import assert_problem


async def page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/kv", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def test_pages_follow_the_cursor_in_byte_order(client: httpx.AsyncClient) -> None:
    keys = ["p/b", "p/a", "p/é", "p/Z", "p/a/1", "p/🙂", "q/x", "p"]
    for key in keys:
        await client.post("/kv", json={"key": key, "value": key})
    first = await page(client, prefix="p/", limit=2)
    assert [item["key"] for item in first["items"]] == ["p/Z", "p/a"]
    assert first["items"][0] == {"key": "p/Z", "revision": 1}  # no value unless asked
    second = await page(client, prefix="p/", limit=2, cursor=first["next"])
    assert [item["key"] for item in second["items"]] == ["p/a/1", "p/b"]
    last = await page(client, prefix="p/", limit=2, cursor=second["next"], values="true")
    assert last == {
        "items": [
            {"key": "p/é", "revision": 1, "value": "p/é"},
            {"key": "p/🙂", "revision": 1, "value": "p/🙂"},
        ],
        "next": None,
    }


async def test_without_a_prefix_every_key_is_listed(client: httpx.AsyncClient) -> None:
    for key in ("b", "a", "c/d"):
        await client.post("/kv", json={"key": key, "value": 1})
    for params in ({}, {"prefix": ""}):
        assert [i["key"] for i in (await page(client, **params))["items"]] == ["a", "b", "c/d"]


async def test_a_full_last_page_says_no_more(client: httpx.AsyncClient) -> None:
    for key in ("a", "b"):
        await client.post("/kv", json={"key": key, "value": 1})
    assert (await page(client, limit=2))["next"] is None
    assert (await page(client, limit=1))["next"] is not None


async def test_the_default_page_holds_100(client: httpx.AsyncClient) -> None:
    for i in range(101):
        await client.post("/kv", json={"key": f"k{i:03d}", "value": i})
    first = await page(client)
    assert len(first["items"]) == 100 and first["next"] is not None
    assert len((await page(client, cursor=first["next"]))["items"]) == 1


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("values=yes", "values"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=", "cursor"),
        ("sort=desc", "sort"),
        ("prefix=a&prefix=b", "prefix"),
        ("limit=1&limit=2", "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    client: httpx.AsyncClient, query: str, named: str
) -> None:
    response = await client.get("/kv?" + query)
    body = assert_problem(response, 400)
    assert named in body["detail"], body


async def test_a_cursor_is_tied_to_its_prefix(client: httpx.AsyncClient) -> None:
    for key in ("a/1", "a/2", "b/1"):
        await client.post("/kv", json={"key": key, "value": 1})
    cursor = (await page(client, prefix="a/", limit=1))["next"]
    body = assert_problem(await client.get("/kv", params={"prefix": "b/", "cursor": cursor}), 400)
    assert "prefix" in body["detail"]
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    assert_problem(await client.get("/kv", params={"prefix": "a/", "cursor": tampered}), 400)


async def test_listing_is_logged_once_per_page(lines: list[str]) -> None:
    async for client in open_client(Settings()):
        await client.get("/kv", params={"prefix": "cfg/"})
        await client.get("/kv", params={"limit": "0"})
    listed = [line for line in lines if "| list " in line]
    assert len(listed) == 2, listed
    assert 'list key="cfg/" outcome=ok status=200' in listed[0] and "items=0" in listed[0]
    assert 'list key="" outcome=invalid status=400' in listed[1]
