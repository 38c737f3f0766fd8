"""kv.client's rules without I/O: URLs, errors from problem+json, Retry-After, parsing."""

import email.utils
import json
import string
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kv.client import TxnCreate, TxnDelete, TxnOp, core, errors
from kv.client.core import Reply, Request
from kv.client.model import Checked, Deleted, Entry, Page, Record, TxnCheck, TxnGet, TxnPut
from kv.client.retry import RetryPolicy, parse_retry_after
from kv.client.urls import Endpoint, encode_key, query

# --- keys in URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("plain", "plain"),
        ("a b", "a%20b"),
        ("100%", "100%25"),
        ("a+b", "a%2Bb"),
        ("what?", "what%3F"),
        ("#tag", "%23tag"),
        ("config/db/host", "config/db/host"),
        ("é/ключ/中", "%C3%A9/%D0%BA%D0%BB%D1%8E%D1%87/%E4%B8%AD"),
        ("-._~", "-._~"),
        ("a;b=c&d", "a%3Bb%3Dc%26d"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("a/./b", "a/%2E/b"),
        ("a/../b", "a/%2E%2E/b"),
        ("../x", "%2E%2E/x"),
        ("a/...", "a/..."),
        (".hidden/.x", ".hidden/.x"),
        ("/lead", "%2Flead"),
        ("a//b", "a/%2Fb"),
        ("a///b", "a/%2F%2Fb"),
        ("//", "%2F%2F"),
        ("%2F", "%252F"),
    ],
)
def test_a_key_is_percent_encoded_but_for_its_slashes(key: str, path: str) -> None:
    assert encode_key(key) == path
    assert unquote(path) == key


keys = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from("/.%+?# "),
    min_size=1,
    max_size=40,
).filter(lambda key: not key.endswith("/"))


@given(keys)
def test_every_key_survives_httpx_unchanged_and_decodes_back(key: str) -> None:
    """What httpx sends is the path built (no `.`/`..` removed, nothing re-encoded), it has
    no empty or dot segment for a proxy to rewrite, and it decodes to the key."""
    path = "/kv/" + encode_key(key)
    assert httpx.URL("http://kv.test/api" + path).raw_path == b"/api" + path.encode()
    assert set(path) <= set(string.ascii_letters + string.digits + "-._~%/")
    segments = path.split("/")[1:]
    assert "" not in segments
    assert not {".", ".."} & set(segments)
    assert unquote(path.removeprefix("/kv/")) == key


def test_query_parameters_are_encoded_whole() -> None:
    text = query(prefix="a/b +c&d=é", limit=5, cursor=None, values="true")
    assert text == "?prefix=a%2Fb%20%2Bc%26d%3D%C3%A9&limit=5&values=true"
    assert parse_qs(text[1:]) == {"prefix": ["a/b +c&d=é"], "limit": ["5"], "values": ["true"]}
    assert query(cursor=None) == ""


def test_requests_of_each_operation() -> None:
    put = core.put("a b", {"x": 1}, if_revision=3, ttl=timedelta(seconds=1.5)).request
    assert (put.method, put.target, put.retry) == ("PUT", "/kv/a%20b", False)
    assert json.loads(put.body or b"") == {"value": {"x": 1}, "ttl": 1.5}
    assert dict(put.headers) == {"if-match": '"3"'}
    assert core.put("k", 1, surface="/v1").request.target == "/v1/k"
    assert core.create("k", None).request.body == b'{"key":"k","value":null}'
    assert core.create("k", 1, surface="/v1").request.target == "/v1/"
    assert core.get("k").request.retry is True
    assert core.delete("k").request.headers == ()
    page = core.list_page("p/", values=True, limit=10, cursor="c").request
    assert (page.target, page.retry) == ("/kv?prefix=p%2F&limit=10&cursor=c&values=true", True)
    assert core.list_page("").request.target == "/kv"
    assert core.watch_request(prefix="").target == "/watch?prefix="
    assert core.watch_request(key="a/b").target == "/watch?key=a%2Fb"
    with pytest.raises(ValueError, match="exactly one"):
        core.watch_request(prefix="a", key="b")
    with pytest.raises(ValueError, match="not JSON compliant"):
        core.put("k", float("nan"))


@pytest.mark.parametrize(
    ("url", "origin", "path"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000", ""),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000", ""),
        ("https://host/kv-api/", "https://host", "/kv-api"),
        ("host:9000", "http://host:9000", ""),
    ],
)
def test_the_endpoint_keeps_a_path_prefix(url: str, origin: str, path: str) -> None:
    endpoint = Endpoint.parse(url)
    assert (endpoint.origin, endpoint.path) == (origin, path)
    assert endpoint.url("/kv/a%20b") == f"{origin}{path}/kv/a%20b"


def test_the_endpoint_comes_from_kv_url_else_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KV_URL", "http://elsewhere:1/x")
    assert str(Endpoint.parse()) == "http://elsewhere:1/x"
    monkeypatch.delenv("KV_URL")
    assert str(Endpoint.parse()) == "http://127.0.0.1:8000"
    for bad in ("ftp://host", "http://", "http://host/?q=1"):
        with pytest.raises(ValueError, match="URL"):
            Endpoint.parse(bad)


# --- replies -------------------------------------------------------------------------------


def reply(status: int, body: Any = None, **headers: str) -> Reply:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status, httpx.Headers(headers), content)


def problem(status: int, title: str, detail: str, **fields: Any) -> Reply:
    slug = title.lower().replace(" ", "-")
    body = {"type": f"urn:kv:problem:{slug}", "title": title, "status": status, "detail": detail}
    return reply(status, {**body, **fields}, **{"content-type": "application/problem+json"})


def test_each_problem_becomes_its_error() -> None:
    cases: list[tuple[Reply, type[errors.KVError]]] = [
        (problem(400, "Bad Request", "bad body"), errors.BadRequest),
        (problem(401, "Unauthorized", "token"), errors.Unauthorized),
        (problem(404, "Not Found", "key 'k' does not exist", key="k"), errors.KeyNotFound),
        (problem(409, "Conflict", "key 'k' already exists", key="k"), errors.KeyExists),
        (problem(412, "Precondition Failed", "at revision 2", key="k"), errors.RevisionMismatch),
        (problem(413, "Payload Too Large", "too big"), errors.PayloadTooLarge),
        (problem(503, "Service Unavailable", "down"), errors.Unavailable),
        (problem(500, "Internal Server Error", "failed"), errors.UnexpectedResponse),
        (problem(405, "Method Not Allowed", "no"), errors.UnexpectedResponse),
    ]
    for given_reply, kind in cases:
        error = core.error_of(given_reply)
        assert type(error) is kind, (given_reply, error)
        assert error.status == given_reply.status
        assert error.detail == json.loads(given_reply.content)["detail"]
    assert isinstance(core.error_of(cases[2][0]), errors.Rejected)
    assert core.error_of(cases[2][0]).key == "k"


def test_a_failed_transaction_keeps_index_key_and_reason() -> None:
    error = core.error_of(
        problem(409, "Conflict", "operation 1 failed", key="b", index=1, reason="not_found")
    )
    assert isinstance(error, errors.TransactionFailed)
    assert (error.index, error.key, error.reason) == (1, "b", "not_found")
    bad = core.error_of(problem(400, "Bad Request", "operation 2: no", index=2))
    assert isinstance(bad, errors.BadRequest) and bad.index == 2


def test_a_404_naming_no_key_is_a_wrong_url_not_a_missing_key() -> None:
    error = core.error_of(problem(404, "Not Found", "no route for /kv-api/kv/a"))
    assert type(error) is errors.UnexpectedResponse


def test_an_answer_that_is_not_a_problem_keeps_its_text() -> None:
    error = core.error_of(reply(502, b"<html>Bad Gateway</html>"))
    assert type(error) is errors.UnexpectedResponse
    assert error.detail == "HTTP 502: <html>Bad Gateway</html>"
    assert core.error_of(reply(503, b"", **{"retry-after": "7"})).retry_after == 7.0  # type: ignore[attr-defined]


def test_the_error_names_the_request_it_answered() -> None:
    call = core.get("a b")
    with pytest.raises(errors.KeyNotFound) as caught:
        core.finish(call, problem(404, "Not Found", "key 'a b' does not exist", key="a b"))
    assert str(caught.value) == "GET /kv/a%20b answered 404: key 'a b' does not exist"


def test_records_parse_with_an_aware_expiry_and_their_etag_is_checked() -> None:
    body = {"key": "k", "value": [1, "é"], "revision": 2, "expires_at": "2026-11-25T20:15:03.120Z"}
    record = core.finish(core.get("k"), reply(200, body, etag='"2"'))
    expires = datetime(2026, 11, 25, 20, 15, 3, 120000, tzinfo=UTC)
    assert record == Record("k", [1, "é"], 2, expires)
    assert record.as_json() == body
    with pytest.raises(errors.UnexpectedResponse, match="ETag"):
        core.finish(core.get("k"), reply(200, body, etag='"3"'))
    for broken in ({"key": "k", "revision": 1}, {"key": 1, "value": 1, "revision": 1},
                   {"key": "k", "value": 1, "revision": 0}, [1], b"not json"):  # fmt: skip
        with pytest.raises(errors.UnexpectedResponse):
            core.finish(core.get("k"), reply(200, broken))


def test_a_page_of_entries_or_records() -> None:
    items = [{"key": "a", "revision": 1}, {"key": "b", "revision": 2, "value": None}]
    page = core.finish(core.list_page(""), reply(200, {"items": items, "next": "c"}))
    assert page == Page([Entry("a", 1), Record("b", None, 2)], "c")


def test_transaction_results_follow_the_operations() -> None:
    call = core.txn(
        [TxnPut("a", 1), TxnGet("b"), {"op": "delete", "key": "c"}, TxnCheck("d", None)]
    )
    assert json.loads(call.request.body or b"")["ops"][2] == {"op": "delete", "key": "c"}
    results = [
        {"key": "a", "value": 1, "revision": 2},
        None,
        {"key": "c", "revision": 4},
        {"key": "d", "revision": None},
    ]
    assert core.finish(call, reply(200, {"results": results})) == [
        Record("a", 1, 2), None, Deleted("c", 4), Checked("d", None)
    ]  # fmt: skip
    with pytest.raises(errors.UnexpectedResponse, match="4 results"):
        core.finish(call, reply(200, {"results": results[:3]}))


def test_operations_and_results_are_written_as_the_api_writes_them() -> None:
    """Optional fields only when set (a required None stays), ttls in seconds, times in UTC."""
    ops: list[TxnOp] = [
        TxnCreate("a", None), TxnCreate("a", {"x": 1}, ttl=timedelta(minutes=1)),
        TxnPut("b", [1], if_revision=3, ttl=2.5), TxnPut("b", 1),
        TxnDelete("c"), TxnDelete("c", if_revision=4), TxnGet("d"), TxnCheck("e", None),
    ]  # fmt: skip
    assert json.loads(core.txn(ops).request.body or b"")["ops"] == [
        {"op": "create", "key": "a", "value": None},
        {"op": "create", "key": "a", "value": {"x": 1}, "ttl": 60.0},
        {"op": "put", "key": "b", "value": [1], "if_revision": 3, "ttl": 2.5},
        {"op": "put", "key": "b", "value": 1},
        {"op": "delete", "key": "c"},
        {"op": "delete", "key": "c", "if_revision": 4},
        {"op": "get", "key": "d"},
        {"op": "check", "key": "e", "revision": None},
    ]
    expires = datetime(2026, 11, 25, 21, 15, 3, 120000, tzinfo=timezone(timedelta(hours=1)))
    assert Entry("k", 1, expires).as_json() == {
        "key": "k", "revision": 1, "expires_at": "2026-11-25T20:15:03.120Z"
    }  # fmt: skip
    assert Record("k", None, 1).as_json() == {"key": "k", "value": None, "revision": 1}
    assert Deleted("k", 2).as_json() == {"key": "k", "revision": 2}
    assert Checked("k", None).as_json() == {"key": "k", "revision": None}


def test_a_listing_stops_at_its_limit_and_at_the_last_page() -> None:
    cursor = core.ListCursor("p", False, 2, 3)
    first = cursor.next_call()
    assert first is not None and first.request.target == "/kv?prefix=p&limit=2"
    two: list[Entry | Record] = [Entry("p1", 1), Entry("p2", 1)]
    assert cursor.take(Page(two, "n1")) == two
    second = cursor.next_call()
    assert second is not None and second.request.target == "/kv?prefix=p&limit=1&cursor=n1"
    assert cursor.take(Page([Entry("p3", 1)], "n2")) == [Entry("p3", 1)]
    assert cursor.next_call() is None
    everything = core.ListCursor("", True, 1000, None)
    everything.take(Page([], None))
    assert everything.next_call() is None
    with pytest.raises(ValueError, match="page_size"):
        core.ListCursor("", False, 1001, None)


# --- Retry-After and retries --------------------------------------------------------------


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_800_000_000.0
    in_five = email.utils.formatdate(now + 5, usegmt=True)
    assert parse_retry_after(in_five, now=now) == 5.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


def unavailable(retry_after: str | None = "1") -> Reply:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    return reply(503, {"detail": "down"}, **headers)


def test_reads_are_retried_as_retry_after_says_within_attempts_and_budget() -> None:
    read = Request("GET", "/kv/a", retry=True)
    retries = RetryPolicy(attempts=3, budget=10).start()
    assert retries.delay(read, unavailable("2")) == 2.0
    assert retries.delay(read, unavailable(None)) == 1.0  # the default delay
    assert retries.delay(read, unavailable("2")) is None  # a third 503: the last attempt
    tight = RetryPolicy(attempts=10, budget=3).start()
    assert tight.delay(read, unavailable("2")) == 2.0
    assert tight.delay(read, unavailable("2")) is None  # 4 s would pass the 3 s budget
    assert RetryPolicy().start().delay(read, reply(200, {})) is None


def test_writes_are_never_retried() -> None:
    write = core.put("a", 1).request
    assert RetryPolicy().start().delay(write, unavailable("0")) is None
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    """What import-linter checks statically (pyproject.toml), checked at run time too."""
    code = (
        "import sys, kv.client\n"
        "print(' '.join(sorted({name.partition('.')[0] for name in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    server = {
        "starlette",
        "uvicorn",
        "redis",
        "asynctnt",
        "orjson",
        "loguru",
        "dependency_injector",
    }
    assert "httpx" in loaded
    assert not server & set(loaded)
    modules = subprocess.run(
        [sys.executable, "-c", "import sys, kv.client; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert not [name for name in modules if name.startswith(("kv.domain", "kv.entrypoints"))]
