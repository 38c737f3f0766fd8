"""The /v1 compatibility surface, line by line from CONTRACT.md.

Only the `client` and `unique` fixtures touch the store, so a suite that overrides `backend`
can run these against a live Tarantool or Redis.
"""

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from loguru import logger

from kv.container import Settings
from tests.conftest import open_client
from tests.support import assert_problem

TOKEN = secrets.token_urlsafe(16)
Unique = Callable[[str], str]

ITEM_ALLOW = "GET, HEAD, PUT, DELETE"


def url(key: str, surface: str = "/v1") -> str:
    return f"{surface}/{quote(key, safe='')}"


def assert_record(response: httpx.Response, key: str, value: Any, revision: int) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"key": key, "value": value, "revision": revision}
    assert response.headers["etag"] == f'"{revision}"'


# --- POST /v1/ -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/", "/v1"])
async def test_post_creates_at_revision_1(
    client: httpx.AsyncClient, unique: Unique, path: str
) -> None:
    key = unique("a")
    response = await client.post(path, json={"key": key, "value": {"x": [1, 2]}})
    assert_record(response, key, {"x": [1, 2]}, 1)
    assert_record(await client.get(url(key)), key, {"x": [1, 2]}, 1)


async def test_post_existing_key_is_409_and_keeps_the_value(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await client.post("/v1/", json={"key": key, "value": 1})
    assert_problem(await client.post("/v1/", json={"key": key, "value": 2}), 409, key=key)
    assert_record(await client.get(url(key)), key, 1, 1)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"key": "k", "value": 1} trailing',
        b'{"key": "k", "value": NaN}',
        b'{"key": "k", "value": Infinity}',
        b'{"key": "k"}',
        b'{"value": 1}',
        b'{"key": "k", "vaule": 1}',
        b'{"key": "k", "value": 1, "revision": 1}',
        b'["k", 1]',
        b'{"key": 1, "value": 1}',
        b'{"key": "", "value": 1}',
        b'{"key": "ends/", "value": 1}',
        b'{"key": "a\\u0001b", "value": 1}',
        b'{"key": "k", "value": "\xff"}',
        b'{"key": "k", "value": ' + b"[" * 257 + b"]" * 257 + b"}",
    ],
)
async def test_post_bad_body_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    assert_problem(await client.post("/v1/", content=body), 400)


async def test_post_reads_json_whatever_the_content_type(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("form")
    body = orjson.dumps({"key": key, "value": "v"})
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert_record(await client.post("/v1/", content=body, headers=headers), key, "v", 1)


async def test_post_too_large_is_413(settings: Settings, unique: Unique) -> None:
    async for client in open_client(settings.replace(max_body_bytes=64)):
        body = {"key": unique("big"), "value": "x" * 100}
        assert_problem(await client.post("/v1/", json=body), 413)


# --- PUT /v1/{key} -------------------------------------------------------------------------


async def test_put_creates_a_missing_key_at_revision_1(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("new")
    assert_record(await client.put(url(key), json={"value": "v"}), key, "v", 1)
    assert_record(await client.get(url(key)), key, "v", 1)


@pytest.mark.parametrize(
    "value",
    [{"a": {"b": [1, 2.5, None]}}, [], "text ü", 0, -1.5, 12345678901234567890123, True, None],
)
async def test_put_overwrites_and_bumps_the_revision(
    client: httpx.AsyncClient, unique: Unique, value: Any
) -> None:
    key = unique("over")
    await client.put(url(key), json={"value": "first"})
    assert_record(await client.put(url(key), json={"value": value}), key, value, 2)
    assert_record(await client.put(url(key), json={"value": value}), key, value, 3)
    assert_record(await client.get(url(key)), key, value, 3)


async def test_put_over_a_post_continues_its_revisions(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await client.post("/v1/", json={"key": key, "value": 1})
    assert_record(await client.put(url(key), json={"value": 2}), key, 2, 2)


async def test_put_accepts_a_key_field_equal_to_the_path(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("with key")
    assert_record(await client.put(url(key), json={"key": key, "value": 1}), key, 1, 1)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"vaule": 1}',
        b'{"value": 1, "revision": 2}',
        b'{"key": "another", "value": 1}',
        b'{"value": NaN}',
        b'{"value": 1} {"value": 2}',
        b"[1]",
        b'{"value": ' + b"[" * 257 + b"]" * 257 + b"}",
    ],
)
async def test_put_bad_body_is_400_and_stores_nothing(
    client: httpx.AsyncClient, unique: Unique, body: bytes
) -> None:
    """Body validation comes first: even on a missing key the answer is 400, not a create."""
    key = unique("bad")
    assert_problem(await client.put(url(key), content=body), 400)
    assert_problem(await client.get(url(key)), 404, key=key)


async def test_put_too_large_is_413_and_stores_nothing(settings: Settings, unique: Unique) -> None:
    async for client in open_client(settings.replace(max_body_bytes=64)):
        key = unique("big")
        assert_problem(await client.put(url(key), json={"value": "x" * 100}), 413)
        assert_problem(await client.get(url(key)), 404)


async def test_put_with_a_matching_if_match_overwrites(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("cas")
    await client.put(url(key), json={"value": 1})
    response = await client.put(url(key), json={"value": 2}, headers={"if-match": '"1"'})
    assert_record(response, key, 2, 2)


async def test_put_with_a_stale_if_match_is_412_and_keeps_the_value(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("cas")
    await client.put(url(key), json={"value": 1})
    await client.put(url(key), json={"value": 2})
    response = await client.put(url(key), json={"value": 3}, headers={"if-match": '"1"'})
    assert_problem(response, 412, key=key)
    assert_record(await client.get(url(key)), key, 2, 2)


@pytest.mark.parametrize("tag", ['"1"', "*"])
async def test_put_with_if_match_on_a_missing_key_is_404_and_creates_nothing(
    client: httpx.AsyncClient, unique: Unique, tag: str
) -> None:
    """With If-Match, PUT is a compare-and-set: it never recreates a key deleted meanwhile."""
    key = unique("gone")
    response = await client.put(url(key), json={"value": 1}, headers={"if-match": tag})
    assert_problem(response, 404, key=key)
    assert_problem(await client.get(url(key)), 404)


async def test_put_with_a_malformed_if_match_is_400(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await client.put(url(key), json={"value": 1})
    response = await client.put(url(key), json={"value": 2}, headers={"if-match": "1"})
    assert_problem(response, 400)


async def test_put_with_if_none_match_star_creates_only_and_never_overwrites(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    """The upsert becomes create-only: 412 when the key exists, which keeps its value."""
    key = unique("once")
    created = await client.put(url(key), json={"value": 1}, headers={"if-none-match": "*"})
    assert_record(created, key, 1, 1)
    again = await client.put(url(key), json={"value": 2}, headers={"if-none-match": "*"})
    assert_problem(again, 412, key=key)
    assert "absent" in again.json()["detail"]
    assert_record(await client.get(url(key)), key, 1, 1)
    assert_problem(
        await client.put(url(key), json={"value": 3}, headers={"if-none-match": '"1"'}), 400
    )
    assert_record(await client.put(url(key), json={"value": 4}), key, 4, 2)


# --- GET /v1/{key} -------------------------------------------------------------------------


async def test_get_returns_the_record_with_its_value(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await client.put(url(key), json={"value": {"nested": ["ü", 1e100]}})
    response = await client.get(url(key))
    assert_record(response, key, {"nested": ["ü", 1e100]}, 1)
    assert "value" in response.json()


async def test_get_missing_is_404(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("missing")
    assert_problem(await client.get(url(key)), 404, key=key)


async def test_head_answers_like_get(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    await client.put(url(key), json={"value": 1})
    response = await client.head(url(key))
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'


# --- DELETE /v1/{key} ----------------------------------------------------------------------


async def test_delete_is_200_with_the_deleted_revision_then_404(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await client.put(url(key), json={"value": 1})
    await client.put(url(key), json={"value": 2})
    response = await client.delete(url(key))
    assert response.status_code == 200
    assert response.json() == {"key": key, "revision": 2}
    assert response.headers["etag"] == '"2"'
    assert_problem(await client.get(url(key)), 404, key=key)
    assert_problem(await client.delete(url(key)), 404, key=key)


async def test_delete_missing_is_404(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("missing")
    assert_problem(await client.delete(url(key)), 404, key=key)


async def test_delete_honours_if_match(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    await client.put(url(key), json={"value": 1})
    await client.put(url(key), json={"value": 2})
    assert_problem(await client.delete(url(key), headers={"if-match": '"1"'}), 412, key=key)
    assert_record(await client.get(url(key)), key, 2, 2)
    response = await client.delete(url(key), headers={"if-match": '"2"'})
    assert response.status_code == 200
    assert response.json() == {"key": key, "revision": 2}


async def test_a_deleted_key_is_created_again_at_revision_1(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("again")
    await client.put(url(key), json={"value": 1})
    await client.put(url(key), json={"value": 2})
    await client.delete(url(key))
    assert_record(await client.put(url(key), json={"value": 3}), key, 3, 1)


# --- same records, keys and paths as /kv ---------------------------------------------------


async def test_v1_and_kv_share_the_records(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("shared")
    await client.post("/kv", json={"key": key, "value": "from kv"})
    assert_record(await client.get(url(key)), key, "from kv", 1)
    assert_record(await client.put(url(key), json={"value": "from v1"}), key, "from v1", 2)
    assert_record(await client.get(url(key, "/kv")), key, "from v1", 2)
    assert (await client.delete(url(key, "/kv"))).status_code == 200
    assert_problem(await client.get(url(key)), 404)
    assert_problem(await client.post("/kv", json={"key": unique("x"), "vaule": 1}), 400)


@pytest.mark.parametrize(
    "name", ["with space", "a/b/c", "100%", "%41", "a+b", "ключ ü 日本", "q?x=1#frag", "😀"]
)
async def test_keys_are_percent_encoded_in_the_url(
    client: httpx.AsyncClient, unique: Unique, name: str
) -> None:
    key = unique(name)
    assert_record(await client.put(url(key), json={"value": name}), key, name, 1)
    assert_record(await client.get(url(key)), key, name, 1)
    assert_record(await client.get(url(key, "/kv")), key, name, 1)
    assert (await client.delete(url(key))).status_code == 200


async def test_a_slash_may_stay_literal_in_the_url(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("config/db/host")
    assert_record(await client.put(f"/v1/{key}", json={"value": "h"}), key, "h", 1)
    assert_record(await client.get(url(key)), key, "h", 1)


async def test_a_trailing_slash_is_ignored(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("slash")
    assert_record(await client.put(url(key) + "/", json={"value": 1}), key, 1, 1)
    assert_record(await client.get(url(key) + "/"), key, 1, 1)
    assert (await client.delete(url(key) + "/")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v1/" + "k" * 1025,
        "/v1/a%01b",
        "/v1/a%7Fb",
        "/v1/%FF",
        "/v1/a%2F",  # ends in "/" once decoded
    ],
)
async def test_invalid_keys_in_the_url_are_400(client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await client.get(path), 400)
    assert_problem(await client.put(path, json={"value": 1}), 400)
    assert_problem(await client.delete(path), 400)


async def test_a_key_of_1024_bytes_is_valid(client: httpx.AsyncClient) -> None:
    key = "é" * 512
    assert_record(await client.put(url(key), json={"value": 1}), key, 1, 1)
    assert (await client.delete(url(key))).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1", "POST"),
        ("PUT", "/v1/", "POST"),
        ("DELETE", "/v1", "POST"),
        ("POST", "/v1/k", ITEM_ALLOW),
        ("PATCH", "/v1/k", ITEM_ALLOW),
        ("OPTIONS", "/v1/k/", ITEM_ALLOW),
    ],
)
async def test_other_methods_are_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_problem(response, 405)
    assert response.headers["allow"] == allow


# --- operation log and auth ----------------------------------------------------------------


async def test_the_operation_log_names_v1_operations(settings: Settings, unique: Unique) -> None:
    messages: list[str] = []
    handler = logger.add(messages.append, format="{message}", level="INFO")
    key = unique("logged")
    try:
        async for client in open_client(settings.replace(log_format="json")):
            await client.post("/v1/", json={"key": key, "value": "secret value"})
            await client.post("/v1/", json={"key": key, "value": 1})
            await client.put(url(key), json={"value": [1, 2]})
            await client.get(url(key))
            await client.delete(url(key))
            await client.delete(url(key))
    finally:
        logger.remove(handler)
    records = [
        orjson.loads(line)
        for message in messages
        for line in message.splitlines()
        if line.startswith("{")
    ]
    ours = [(r["operation"], r["outcome"], r["status"]) for r in records if r.get("key") == key]
    assert ours == [
        ("create", "ok", 200),
        ("create", "exists", 409),
        ("upsert", "ok", 200),
        ("get", "ok", 200),
        ("delete", "ok", 200),
        ("delete", "not_found", 404),
    ]
    assert not any("secret value" in message for message in messages)


async def test_v1_needs_the_token_when_one_is_set(settings: Settings, unique: Unique) -> None:
    key = unique("auth")
    async for client in open_client(settings.replace(auth_token=TOKEN)):
        assert_problem(await client.put(url(key), json={"value": 1}), 401)
        assert_problem(await client.post("/v1/", json={"key": key, "value": 1}), 401)
        assert_problem(await client.get(url(key)), 401)
        good = {"authorization": f"Bearer {TOKEN}"}
        response = await client.put(url(key), json={"value": 1}, headers=good)
        assert_record(response, key, 1, 1)
        assert_record(await client.get(url(key), headers=good), key, 1, 1)
