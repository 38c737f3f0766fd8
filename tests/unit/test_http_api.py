"""Every line of CONTRACT's /kv section, through the ASGI app.

Written against the `client`, `settings` and `unique` fixtures only, so that
tests/integration re-runs this module on every live backend.
"""

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from kv.container import Settings
from tests.conftest import open_client
from tests.support import assert_problem

Unique = Callable[[str], str]


def url(key: str) -> str:
    return "/kv/" + quote(key, safe="/")


async def create(client: httpx.AsyncClient, key: str, value: Any = 1) -> httpx.Response:
    response = await client.post("/kv", json={"key": key, "value": value})
    assert response.status_code == 200, response.text
    return response


# --- create -----------------------------------------------------------------------------------


async def test_post_creates_at_revision_1(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    response = await client.post("/kv", json={"key": key, "value": {"x": [1, 2.5, None]}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == '"1"'
    assert response.json() == {"key": key, "value": {"x": [1, 2.5, None]}, "revision": 1}


async def test_post_of_an_existing_key_is_409_and_keeps_the_value(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key, "first")
    assert_problem(await client.post("/kv", json={"key": key, "value": "second"}), 409, key)
    assert (await client.get(url(key))).json()["value"] == "first"


@pytest.mark.parametrize(
    "value", [{"a": {"b": [1, "x"]}}, [1, [2, [3]]], "text é🙂", 42, -1.5e-7, True, False, None]
)
async def test_every_kind_of_json_value_is_stored_and_returned(
    client: httpx.AsyncClient, unique: Unique, value: Any
) -> None:
    key = unique("v")
    await create(client, key, value)
    assert (await client.get(url(key))).json()["value"] == value


async def test_numbers_beyond_64_bits_come_back_exact(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("big")
    numbers = "[18446744073709551617, -99999999999999999999999]"
    body = '{"key": ' + json.dumps(key) + ', "value": ' + numbers + "}"
    assert (await client.post("/kv", content=body)).status_code == 200
    got = await client.get(url(key))
    assert json.loads(got.content)["value"] == [18446744073709551617, -99999999999999999999999]


@pytest.mark.parametrize(
    "number",
    [
        -9223372036854775809,  # below -2**63, only 19 digits: it went through orjson, a float
        -9223372036854775808,
        -99999999999999999999,
        18446744073709551615,
        18446744073709551616,
        -(10**4299),  # 4300 digits: the most kv takes
        10**4299,
    ],
)
async def test_integers_of_either_sign_and_any_size_up_to_4300_digits_come_back_exact(
    client: httpx.AsyncClient, unique: Unique, number: int
) -> None:
    key = unique("int")
    value = {"n": number, "list": [number, 1.5, "-9223372036854775809", -number]}
    body = '{"key": ' + json.dumps(key) + ', "value": ' + json.dumps(value) + "}"
    response = await client.post("/kv", content=body)
    assert response.status_code == 200, response.text
    assert json.loads(response.content)["value"] == value
    got = await client.get(url(key))
    assert json.loads(got.content)["value"] == value
    assert str(number).encode() in got.content  # the digits as sent, never a float
    put = await client.put(url(key), content='{"value": ' + str(number) + "}")
    assert json.loads(put.content)["value"] == number


async def test_a_number_of_more_than_4300_digits_is_a_400_in_kvs_own_words(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("long")
    for number in ("1" * 4301, "-" + "9" * 5000, "1." + "0" * 4301, "1e" + "0" * 4301):
        body = '{"key": ' + json.dumps(key) + ', "value": [1, ' + number + "]}"
        problem = assert_problem(await client.post("/kv", content=body), 400)
        assert "4300 digits" in problem["detail"]
        assert "set_int_max_str_digits" not in problem["detail"]
    assert_problem(await client.get(url(key)), 404)
    # In a string, digits are just text, however many (next to a long integer or not).
    digits = "9" * 5000
    for value in ([digits], [digits, 10**30]):
        response = await client.put(url(key), json={"value": value})
        assert response.status_code in (200, 404), response.text
        created = await client.post("/kv", json={"key": unique(f"s{len(value)}"), "value": value})
        assert json.loads(created.content)["value"] == value


async def test_an_integer_beyond_64_bits_is_not_a_key(client: httpx.AsyncClient) -> None:
    problem = assert_problem(
        await client.post("/kv", content=b'{"key": 123456789012345678901, "value": 1}'), 400
    )
    assert problem["detail"] == "a key must be a string, not a number"


async def test_values_are_stored_as_compact_json(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("compact")
    body = '{"key": ' + json.dumps(key) + ', "value": { "a" : [ 1 , 2 ] }}'
    assert (await client.post("/kv", content=body)).status_code == 200
    assert b'"value":{"a":[1,2]}' in (await client.get(url(key))).content


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "text/plain", "application/json"]
)
async def test_the_body_is_json_whatever_the_content_type(
    client: httpx.AsyncClient, unique: Unique, content_type: str | None
) -> None:
    key = unique("ct")
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"key": key, "value": [1]})
    response = await client.post("/kv", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["value"] == [1]


# --- bad input --------------------------------------------------------------------------------

BAD_POST_BODIES = [
    b"",
    b"not json",
    b'{"key": "a", "value": 1',
    b'{"key": "a", "value": 1} trailing',
    b'{"key": "a", "value": NaN}',
    b'{"key": "a", "value": Infinity}',
    b'{"key": "a", "value": -Infinity}',
    b'{"key": "a", "value": "\xff\xfe"}',
    b'{"key": "\xc3", "value": 1}',
    b"[1, 2]",
    b'"just a string"',
    b"null",
    b'{"value": 1}',
    b'{"key": "a"}',
    b'{"key": "a", "vaule": 1}',
    b'{"key": "a", "value": 1, "revision": 3}',
    b'{"key": 1, "value": 1}',
    b'{"key": null, "value": 1}',
    b'{"key": "", "value": 1}',
    b'{"key": "a/", "value": 1}',
    b'{"key": "a\\u0000b", "value": 1}',
    b'{"key": "a\\nb", "value": 1}',
    b'{"key": "a\\u007fb", "value": 1}',
    b'{"key": "\\ud800", "value": 1}',
    b'{"key": "' + b"x" * 1025 + b'", "value": 1}',
    b'{"key": "a", "value": ' + b"[" * 257 + b"]" * 257 + b"}",
    b'{"key": "a", "value": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"key": "a", "value": 1e400}',
    b'{"key": "a", "value": 99999999999999999999999e99999}',
    # The same faults in bodies read by the standard library (a run of 20 digits sends them
    # there, to keep integers beyond 64 bits exact).
    b'{"key": "a", "value": [NaN, 123456789012345678901]}',
    b'{"key": "a", "value": [1e400, 123456789012345678901]}',
    b'{"key": "a", "value": ["\\ud800", 123456789012345678901]}',
    b'{"key": "a", "value": ["\xff", 123456789012345678901]}',
    b'{"key": "a", "value": 123456789012345678901} trailing',
    b'{"key": "a", "value": [' + b"[" * 257 + b"123456789012345678901" + b"]" * 258 + b"}",
    b'{"key": "a", "value": {123456789012345678901: 1}}',
    b'{"key": "a", "value": 0123456789012345678901}',
    b'{"key": "a", "vaule": 123456789012345678901}',
]


@pytest.mark.parametrize("body", BAD_POST_BODIES, ids=range(len(BAD_POST_BODIES)))
async def test_bad_post_bodies_are_400_and_store_nothing(
    client: httpx.AsyncClient, body: bytes
) -> None:
    assert_problem(await client.post("/kv", content=body), 400)
    # Nothing was stored under "a", and the server still answers.
    assert_problem(await client.get("/kv/a"), 404, "a")
    assert (await client.get("/health")).status_code == 200


async def test_a_value_nested_256_levels_is_accepted(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("deep")
    body = b'{"key": %b, "value": %b}' % (json.dumps(key).encode(), b"[" * 256 + b"]" * 256)
    assert (await client.post("/kv", content=body)).status_code == 200


async def test_a_bad_body_is_400_even_when_the_key_is_missing(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    missing = url(unique("missing"))
    assert_problem(await client.put(missing, content=b"{bad"), 400)
    assert_problem(await client.put(missing, json={"vaule": 1}), 400)
    assert_problem(await client.put(missing, json={"value": 1}), 404)


async def test_unknown_fields_are_named_in_the_error(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/kv", json={"key": "a", "vaule": 1}), 400)
    assert "vaule" in body["detail"]


@pytest.mark.parametrize(
    "raw_url", ["/kv/a%00b", "/kv/a%0Ab", "/kv/%FF", "/kv/%C3", "/kv/a%2F", "/kv/" + "x" * 1025]
)
async def test_invalid_keys_in_the_url_are_400(client: httpx.AsyncClient, raw_url: str) -> None:
    for method in ("GET", "DELETE"):
        assert_problem(await client.request(method, raw_url), 400)
    assert_problem(await client.put(raw_url, json={"value": 1}), 400)


async def test_the_put_body_may_repeat_the_key_only_if_equal(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key)
    ok = await client.put(url(key), json={"key": key, "value": 2})
    assert ok.status_code == 200 and ok.json()["revision"] == 2
    assert_problem(await client.put(url(key), json={"key": key + "x", "value": 3}), 400)
    assert (await client.get(url(key))).json()["value"] == 2


# --- overwrite, get, delete -------------------------------------------------------------------


async def test_put_overwrites_and_bumps_the_revision(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key, 1)
    response = await client.put(url(key), json={"value": {"new": True}})
    assert response.status_code == 200
    assert response.headers["etag"] == '"2"'
    assert response.json() == {"key": key, "value": {"new": True}, "revision": 2}
    got = await client.get(url(key))
    assert got.json() == {"key": key, "value": {"new": True}, "revision": 2}
    assert got.headers["etag"] == '"2"'


async def test_put_of_a_missing_key_is_404_and_creates_nothing(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("missing")
    assert_problem(await client.put(url(key), json={"value": 1}), 404, key)
    assert_problem(await client.get(url(key)), 404, key)


async def test_get_of_a_missing_key_is_404(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("missing")
    assert_problem(await client.get(url(key)), 404, key)


async def test_delete_returns_key_and_revision_then_404(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key)
    await client.put(url(key), json={"value": 2})
    response = await client.delete(url(key))
    assert response.status_code == 200
    assert response.json() == {"key": key, "revision": 2}
    assert response.headers["etag"] == '"2"'
    assert_problem(await client.delete(url(key)), 404, key)
    assert_problem(await client.get(url(key)), 404, key)


async def test_head_answers_like_get_without_a_body(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key)
    response = await client.head(url(key))
    assert response.status_code == 200 and response.headers["etag"] == '"1"'
    assert (await client.head(url(unique("missing")))).status_code == 404


# --- keys in URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a b", "config/db/host", "100%", "a+b", "日本語/🙂", "?#&=", ";,@"]
)
async def test_keys_round_trip_through_percent_encoded_urls(
    client: httpx.AsyncClient, unique: Unique, name: str
) -> None:
    key = unique(name)
    await create(client, key, name)
    for encoded in (quote(key, safe=""), quote(key, safe="/")):
        got = await client.get("/kv/" + encoded)
        assert got.status_code == 200, (encoded, got.text)
        assert got.json() == {"key": key, "value": name, "revision": 1}


async def test_plus_is_a_plus_not_a_space(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a+b")
    await create(client, key)
    assert (await client.get("/kv/" + key.replace("+", "%2B"))).status_code == 200
    assert_problem(await client.get("/kv/" + key.replace("+", " ")), 404)


async def test_a_trailing_slash_is_ignored(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    assert (await client.post("/kv/", json={"key": key, "value": 1})).status_code == 200
    assert (await client.get(url(key) + "/")).json()["revision"] == 1
    assert (await client.put(url(key) + "/", json={"value": 2})).json()["revision"] == 2
    assert (await client.delete(url(key) + "/")).json()["revision"] == 2
    assert (await client.get("/health/")).status_code == 200


# --- compare-and-set --------------------------------------------------------------------------


async def test_if_match_with_the_current_revision_overwrites(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key)
    response = await client.put(url(key), json={"value": 2}, headers={"if-match": '"1"'})
    assert response.status_code == 200 and response.json()["revision"] == 2


async def test_if_match_with_a_stale_revision_is_412_and_changes_nothing(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key, "v1")
    await client.put(url(key), json={"value": "v2"})
    assert_problem(
        await client.put(url(key), json={"value": "v3"}, headers={"if-match": '"1"'}), 412, key
    )
    assert_problem(await client.delete(url(key), headers={"if-match": '"1"'}), 412, key)
    got = await client.get(url(key))
    assert got.json() == {"key": key, "value": "v2", "revision": 2}


async def test_if_match_on_a_missing_key_is_404(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("missing")
    headers = {"if-match": '"1"'}
    assert_problem(await client.put(url(key), json={"value": 1}, headers=headers), 404, key)
    assert_problem(await client.delete(url(key), headers=headers), 404, key)


async def test_if_match_on_delete_with_the_current_revision_deletes(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    await create(client, key)
    assert (await client.delete(url(key), headers={"if-match": '"1"'})).status_code == 200
    assert_problem(await client.get(url(key)), 404)


async def test_if_match_star_and_weak_tags(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    await create(client, key)
    star = await client.put(url(key), json={"value": 2}, headers={"if-match": "*"})
    assert star.status_code == 200
    # If-Match compares strongly: a weak tag never matches.
    assert_problem(
        await client.put(url(key), json={"value": 3}, headers={"if-match": 'W/"2"'}), 412
    )


@pytest.mark.parametrize("header", ["1", '"one"', '"1", "2"', '""'])
async def test_a_malformed_if_match_is_400(
    client: httpx.AsyncClient, unique: Unique, header: str
) -> None:
    key = unique("a")
    await create(client, key)
    assert_problem(await client.put(url(key), json={"value": 2}, headers={"if-match": header}), 400)
    assert (await client.get(url(key))).json()["revision"] == 1


async def test_if_match_digits_beyond_ascii_or_64_bits_are_answered_not_a_500(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    # "²" passes str.isdigit() but not int(); 5000 digits exceed int()'s limit. Both were 500s.
    key = unique("a")
    await create(client, key)
    superscript = {b"if-match": '"\u00b2"'.encode("latin-1")}
    assert_problem(await client.put(url(key), json={"value": 2}, headers=superscript), 400)
    for digits in ("1" * 5000, "18446744073709551617"):
        huge = {"if-match": f'"{digits}"'}
        assert_problem(await client.put(url(key), json={"value": 2}, headers=huge), 412, key)
        assert_problem(await client.delete(url(key), headers=huge), 412, key)
    assert (await client.get(url(key))).json()["revision"] == 1


async def test_if_match_compares_entity_tags_character_by_character(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    """RFC 9110 §8.8.3.2: "01" is not the ETag "1", on any method."""
    key = unique("a")
    await create(client, key)
    for tag in ('"01"', '"001"', '"0"', '"00"'):
        headers = {"if-match": tag}
        assert_problem(await client.put(url(key), json={"value": 2}, headers=headers), 412, key)
        assert_problem(await client.delete(url(key), headers=headers), 412, key)
        assert_problem(await client.get(url(key), headers=headers), 412, key)
    assert (await client.get(url(key))).json()["revision"] == 1


async def test_two_if_match_lines_are_a_400(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    await create(client, key)
    for lines in (
        [("if-match", '"1"'), ("if-match", '"1"')],
        [("if-match", '"1"'), ("if-match", '"2"')],
    ):
        for method in ("PUT", "DELETE", "GET"):
            response = await client.request(method, url(key), json={"value": 2}, headers=lines)
            assert_problem(response, 400)
    assert (await client.get(url(key))).json()["revision"] == 1


async def test_if_match_on_get_is_evaluated(client: httpx.AsyncClient, unique: Unique) -> None:
    """RFC 9110 §13.1.1: a failed If-Match is a 412 on any method, reads included."""
    key = unique("a")
    await create(client, key, "v1")
    await client.put(url(key), json={"value": "v2"})
    for method in ("GET", "HEAD"):
        current = await client.request(method, url(key), headers={"if-match": '"2"'})
        assert current.status_code == 200 and current.headers["etag"] == '"2"'
        star = await client.request(method, url(key), headers={"if-match": "*"})
        assert star.status_code == 200
        stale = await client.request(method, url(key), headers={"if-match": '"1"'})
        assert stale.status_code == 412
    body = assert_problem(await client.get(url(key), headers={"if-match": '"1"'}), 412, key)
    assert "revision 2" in body["detail"] and "revision 1" in body["detail"]
    assert_problem(await client.get(url(key), headers={"if-match": 'W/"2"'}), 412, key)
    missing = unique("missing")
    for tag in ('"1"', "*"):
        assert_problem(await client.get(url(missing), headers={"if-match": tag}), 404, missing)


# --- If-None-Match -----------------------------------------------------------------------------


async def test_put_with_if_none_match_star_creates_only(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    """The create-only idiom (RFC 9110 §13.1.2): a PUT that must not overwrite."""
    key = unique("a")
    created = await client.put(url(key), json={"value": "first"}, headers={"if-none-match": "*"})
    assert created.status_code == 200, created.text
    assert created.json() == {"key": key, "value": "first", "revision": 1}
    assert created.headers["etag"] == '"1"'
    again = await client.put(url(key), json={"value": "second"}, headers={"if-none-match": "*"})
    body = assert_problem(again, 412, key)
    assert "exists" in body["detail"] and "absent" in body["detail"]
    assert (await client.get(url(key))).json() == created.json()


async def test_concurrent_create_only_puts_let_exactly_one_win(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("race")
    responses = await asyncio.gather(
        *(
            client.put(url(key), json={"value": i}, headers={"if-none-match": "*"})
            for i in range(32)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [412] * 31
    winner = next(r for r in responses if r.status_code == 200).json()
    assert (await client.get(url(key))).json() == winner


@pytest.mark.parametrize("header", ['"1"', 'W/"1"', '"1", *', "**", ""])
async def test_if_none_match_on_a_write_other_than_star_is_400(
    client: httpx.AsyncClient, unique: Unique, header: str
) -> None:
    key = unique("a")
    await create(client, key)
    response = await client.put(url(key), json={"value": 2}, headers={"if-none-match": header})
    assert_problem(response, 400)
    assert (await client.get(url(key))).json()["revision"] == 1


async def test_if_none_match_with_if_match_on_a_write_is_400(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("a")
    headers = {"if-none-match": "*", "if-match": '"1"'}
    assert_problem(await client.put(url(key), json={"value": 1}, headers=headers), 400)
    assert_problem(await client.get(url(key)), 404)


async def test_if_none_match_on_delete_is_400(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    await create(client, key)
    for header in ("*", '"1"', '"2"'):
        assert_problem(await client.delete(url(key), headers={"if-none-match": header}), 400)
    assert (await client.get(url(key))).json()["revision"] == 1


async def test_if_none_match_on_get_answers_304_when_a_tag_matches(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    """A cache revalidating: 304 with the ETag and no body when its copy is current."""
    key = unique("a")
    await create(client, key, "v1")
    await client.put(url(key), json={"value": "v2"})
    for header in ('"2"', 'W/"2"', '"1", "2"', '"7" ,W/"2"', "*"):
        for method in ("GET", "HEAD"):
            response = await client.request(method, url(key), headers={"if-none-match": header})
            assert response.status_code == 304, (header, response.text)
            assert response.headers["etag"] == '"2"' and response.content == b""
            assert "content-type" not in response.headers
    for header in ('"1"', 'W/"1"', '"02"', '"1", "3"'):
        response = await client.get(url(key), headers={"if-none-match": header})
        assert response.status_code == 200 and response.json()["value"] == "v2"
    missing = unique("missing")
    assert_problem(await client.get(url(missing), headers={"if-none-match": "*"}), 404)
    assert_problem(await client.get(url(missing), headers={"if-none-match": '"1"'}), 404)


@pytest.mark.parametrize("header", ["2", '"2', '"2" "3"', '"2",', 'w/"2"', ""])
async def test_a_malformed_if_none_match_on_get_is_400(
    client: httpx.AsyncClient, unique: Unique, header: str
) -> None:
    key = unique("a")
    await create(client, key)
    assert_problem(await client.get(url(key), headers={"if-none-match": header}), 400)


async def test_if_match_is_evaluated_before_if_none_match_on_get(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    """RFC 9110 §13.2.2's order: a failed If-Match is a 412 even when If-None-Match matches."""
    key = unique("a")
    await create(client, key)
    both = {"if-match": '"1"', "if-none-match": '"1"'}
    assert (await client.get(url(key), headers=both)).status_code == 304
    stale = {"if-match": '"5"', "if-none-match": '"1"'}
    assert_problem(await client.get(url(key), headers=stale), 412, key)


async def test_etag_round_trips_into_if_match(client: httpx.AsyncClient, unique: Unique) -> None:
    key = unique("a")
    etag = (await create(client, key)).headers["etag"]
    response = await client.put(url(key), json={"value": 2}, headers={"if-match": etag})
    assert response.status_code == 200


# --- concurrency ------------------------------------------------------------------------------


async def test_64_concurrent_posts_of_one_key_give_one_200_and_63_409(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("race")
    responses = await asyncio.gather(
        *(client.post("/kv", json={"key": key, "value": i}) for i in range(64))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 63
    winner = next(r for r in responses if r.status_code == 200).json()
    assert (await client.get(url(key))).json() == winner


async def test_concurrent_compare_and_set_lets_one_writer_win(
    client: httpx.AsyncClient, unique: Unique
) -> None:
    key = unique("cas")
    await create(client, key, 0)
    responses = await asyncio.gather(
        *(client.put(url(key), json={"value": i}, headers={"if-match": '"1"'}) for i in range(32))
    )
    assert sorted(r.status_code for r in responses) == [200] + [412] * 31


# --- methods, errors, service endpoints ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/kv/a", "GET, HEAD, PUT, DELETE"),
        ("POST", "/kv/a", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/kv", "POST, GET, HEAD"),
        ("DELETE", "/kv/", "POST, GET, HEAD"),
        ("PUT", "/kv", "POST, GET, HEAD"),
        ("GET", "/txn", "POST"),
        ("POST", "/watch", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
    ],
)
async def test_other_methods_are_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_problem(response, 405)
    # Starlette lists a route's own methods in no fixed order.
    assert set(response.headers["allow"].split(", ")) == set(allow.split(", "))


async def test_unknown_paths_are_404_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404)


async def test_service_endpoints(client: httpx.AsyncClient, settings: Settings) -> None:
    root = await client.get("/")
    assert root.status_code == 200
    assert root.json()["service"] == "kv" and root.json()["backend"] == settings.backend
    assert root.json()["version"]
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_request_ids_are_taken_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/health", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    first = (await client.get("/kv/missing")).headers["x-request-id"]
    second = (await client.get("/kv/missing")).headers["x-request-id"]
    assert first and second and first != second
    odd = await client.get("/health", headers={"x-request-id": "x" * 500})
    assert odd.headers["x-request-id"] != "x" * 500


# --- body limit -------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413(settings: Settings, unique: Unique) -> None:
    async for client in open_client(settings.replace(max_body_bytes=1000)):
        key = unique("big")
        big = json.dumps({"key": key, "value": "x" * 2000})
        assert_problem(await client.post("/kv", content=big), 413)
        assert_problem(await client.get(url(key)), 404)
        small = json.dumps({"key": key, "value": "x" * 100})
        assert (await client.post("/kv", content=small)).status_code == 200
        assert_problem(await client.put(url(key), content=big), 413)
        assert (await client.get(url(key))).json()["revision"] == 1


async def test_a_streamed_body_over_the_limit_is_refused_before_it_ends(settings: Settings) -> None:
    """Without Content-Length the limit is counted while reading: the rest is never read."""
    sent = 0

    async def chunks() -> Any:
        nonlocal sent
        for _ in range(64 * 1024):  # 64 MiB in 1 KiB chunks, if anybody read them all
            sent += 1
            yield b"x" * 1024

    async for client in open_client(settings.replace(max_body_bytes=10_000)):
        response = await client.post("/kv", content=chunks())
        assert_problem(response, 413)
        assert response.headers.get("connection") == "close"
        assert sent < 100
        assert (await client.get("/health")).status_code == 200


async def test_a_value_near_the_body_limit_round_trips(
    client: httpx.AsyncClient, settings: Settings, unique: Unique
) -> None:
    # 1e15 is stored as 1000000000000000.0: the stored JSON is almost 4 times the body, which
    # every backend must hold (Tarantool: init.lua's memtx_max_tuple_size).
    key = unique("big")
    count = (settings.max_body_bytes - 100) // len(b"1e15,")
    body = b'{"key":%b,"value":[%b]}' % (json.dumps(key).encode(), b",".join([b"1e15"] * count))
    assert len(body) <= settings.max_body_bytes
    assert (await client.post("/kv", content=body)).status_code == 200
    read = await client.get(url(key))
    assert read.status_code == 200
    assert read.json()["value"] == [1e15] * count


@pytest.mark.parametrize(
    "path",
    ["/kv%2F{k}", "/%6Bv/{k}", "/%6B%76/{k}", "/v1%2F{k}", "/%76%31/{k}", "/kv%2f{k}"],
)
async def test_a_route_prefix_that_matches_only_once_decoded_is_no_route(
    client: httpx.AsyncClient, path: str
) -> None:
    # Keys such a path would otherwise have named, had the key been cut at a fixed offset.
    for key in ("2Fk", "v/k", "k", "1/k", "2fk", "%76/k"):
        await client.post("/kv", json={"key": key, "value": "must stay"})
    url = path.format(k="k")
    for method in ("GET", "PUT", "DELETE", "HEAD"):
        response = await client.request(method, url, json={"value": "overwritten"})
        assert response.status_code == 404, (method, url, response.text)
    for key in ("2Fk", "v/k", "k", "1/k", "2fk", "%76/k"):
        assert (await client.get(f"/kv/{quote(key, safe='/')}")).json()["value"] == "must stay"


async def test_a_fixed_route_must_be_sent_as_it_is_written(client: httpx.AsyncClient) -> None:
    assert (await client.get("/%68ealth")).status_code == 404
    assert (await client.get("/health")).status_code == 200
    assert (await client.post("/v1%2F", json={"key": "x", "value": 1})).status_code == 404
    assert (await client.post("/v1/", json={"key": "x", "value": 1})).status_code == 200
