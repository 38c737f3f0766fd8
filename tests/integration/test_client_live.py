"""Client and AsyncClient against a real `kv serve` on each backend (tests/integration/
conftest.py `live_kv`): every operation, and every error the client can raise."""

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from kv.client import (
    BadRequest,
    Checked,
    ConnectionFailed,
    Deleted,
    DeleteEvent,
    Entry,
    KeyExists,
    KeyNotFound,
    PayloadTooLarge,
    PutEvent,
    Record,
    RevisionMismatch,
    Synced,
    TimedOut,
    TransactionFailed,
    TxnCheck,
    TxnCreate,
    TxnDelete,
    TxnGet,
    TxnPut,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
)
from tests.client_driver import KINDS, Driver
from tests.integration.conftest import LiveKV
from tests.servers import free_port
from tests.servers.kv import start_kv, stop_kv

# Keys a URL could mangle: each goes through every operation.
ODD_KEYS = [
    "plain", "a b", "100%", "a+b", "what?", "#tag", "dir/sub/leaf", "é/ключ/中", "a/./b",
    "a/../b", "..", "/lead", "a//b", "%2F", "tab\u00a0nbsp", "emoji \U0001f511",
]  # fmt: skip


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def kv(live_kv: LiveKV, kind: str) -> Iterator[Driver]:
    with Driver(kind, live_kv.url) as driver:
        yield driver


@pytest.fixture
def prefix() -> str:
    """Unique to the test; a hash tag puts its keys in one slot (transactions on a cluster)."""
    return f"client-{{{uuid.uuid4().hex[:10]}}}/"


def test_every_single_key_operation_on_odd_keys(kv: Driver, prefix: str) -> None:
    for name in ODD_KEYS:
        key = prefix + name
        assert kv.call("create", key, {"name": name}) == Record(key, {"name": name}, 1)
        assert kv.call("get", key) == Record(key, {"name": name}, 1)
        assert kv.call("put", key, [1, 2.5, None], if_revision=1) == Record(key, [1, 2.5, None], 2)
        assert kv.call("upsert", key, "three") == Record(key, "three", 3)
        assert kv.call("delete", key, if_revision=3) == Deleted(key, 3)
        assert kv.call("upsert", key, True) == Record(key, True, 1)
        assert kv.call("delete", key) == Deleted(key, 1)


def test_the_stores_refusals(kv: Driver, prefix: str) -> None:
    key, missing = prefix + "k", prefix + "missing"
    kv.call("create", key, 1)
    with pytest.raises(KeyExists) as exists:
        kv.call("create", key, 2)
    assert (exists.value.status, exists.value.key) == (409, key)
    for method, args in (("get", ()), ("put", (1,)), ("delete", ())):
        with pytest.raises(KeyNotFound) as not_found:
            kv.call(method, missing, *args)
        assert not_found.value.key == missing
    with pytest.raises(RevisionMismatch, match="at revision 1"):
        kv.call("put", key, 2, if_revision=5)
    with pytest.raises(RevisionMismatch):
        kv.call("delete", key, if_revision=5)
    assert kv.call("get", key) == Record(key, 1, 1)


def test_bad_requests(kv: Driver, prefix: str) -> None:
    with pytest.raises(BadRequest, match="ttl"):
        kv.call("create", prefix + "k", 1, ttl=-1)
    with pytest.raises(BadRequest, match="control"):
        kv.call("get", prefix + "bell\x07")
    with pytest.raises(BadRequest) as txn:
        kv.call("txn", [TxnGet(prefix + "a"), {"op": "rename", "key": prefix + "b"}])
    assert txn.value.index == 1


def test_ttl(kv: Driver, prefix: str) -> None:
    key = prefix + "short"
    record = kv.call("create", key, "soon gone", ttl=timedelta(milliseconds=300))
    assert record.expires_at is not None and record.expires_at.tzinfo is not None
    assert record.expires_at - datetime.now(UTC) < timedelta(seconds=60)  # not ten years
    long = prefix + "long"
    assert kv.call("create", long, 1, ttl=300).expires_at is not None
    assert kv.call("put", long, 2).expires_at is None  # an overwrite without ttl removes it
    deadline = time.monotonic() + 10
    while True:
        try:
            kv.call("get", key)
        except KeyNotFound:
            break
        assert time.monotonic() < deadline, "the key outlived its ttl by 10 s"
        time.sleep(0.05)
    assert kv.call("create", key, "afresh").revision == 1


def test_listing_every_page_in_byte_order(kv: Driver, prefix: str) -> None:
    keys = [prefix + name for name in ODD_KEYS] + [f"{prefix}n/{i:02}" for i in range(20)]
    for i, key in enumerate(keys):
        kv.call("create", key, i)
    ordered = sorted(keys, key=str.encode)
    assert [e.key for e in kv.list(prefix, page_size=7)] == ordered
    assert kv.list(prefix, page_size=1000)[0] == Entry(ordered[0], 1)
    values = {r.key: r.value for r in kv.list(prefix, values=True, page_size=3)}
    assert values == {key: i for i, key in enumerate(keys)}
    assert [e.key for e in kv.list(prefix, page_size=4, limit=6)] == ordered[:6]
    assert [e.key for e in kv.list(prefix + "n/1")] == [f"{prefix}n/1{i}" for i in range(10)]
    assert kv.list(prefix + "nothing/") == []


def test_transactions(kv: Driver, prefix: str) -> None:
    a, b, c, d = prefix + "a", prefix + "b b", prefix + "c/é", prefix + "d"
    for key in (a, c, d):
        kv.call("create", key, 1)
    results = kv.call(
        "txn",
        [TxnCheck(d, 1), TxnPut(a, 2, if_revision=1), TxnCreate(b, [b]),
         TxnGet(prefix + "none"), TxnDelete(c)],
    )  # fmt: skip
    assert results == [Checked(d, 1), Record(a, 2, 2), Record(b, [b], 1), None, Deleted(c, 1)]
    with pytest.raises(TransactionFailed) as failed:
        kv.call("txn", [TxnDelete(b), TxnCheck(c, None), TxnPut(a, 3, if_revision=1)])
    assert (failed.value.index, failed.value.key, failed.value.reason) == (
        2, a, "revision_mismatch"
    )  # fmt: skip
    assert kv.call("get", b) == Record(b, [b], 1)  # nothing was written


def test_a_watch_sees_every_change_in_order(kv: Driver, prefix: str) -> None:
    kv.call("create", prefix + "old", 0)
    events = kv.watch(prefix)
    try:
        assert events.take(2) == [PutEvent(prefix + "old", 0, 1, None, True), Synced("start", 1, 0)]
        key = prefix + "a b/é"
        kv.call("create", key, 1)
        kv.call("put", key, 2)
        kv.call("delete", key)
        kv.call("create", prefix + "ttl", "t", ttl=0.2)
        kv.call("txn", [TxnCreate(key, 3), TxnDelete(prefix + "old")])
        kv.call("create", "elsewhere-" + prefix + "x", "not watched")
        taken = events.take(7)
    finally:
        events.close()
    assert taken[:3] == [PutEvent(key, 1, 1), PutEvent(key, 2, 2), DeleteEvent(key, 2, "deleted")]
    expiring = taken[3]
    assert isinstance(expiring, PutEvent) and expiring.expires_at is not None
    assert sorted(map(repr, taken[4:])) == sorted(
        map(repr, [PutEvent(key, 3, 1), DeleteEvent(prefix + "old", 1, "deleted"),
                   DeleteEvent(prefix + "ttl", 1, "expired")])
    )  # fmt: skip


def test_a_key_watch(kv: Driver, prefix: str) -> None:
    key = prefix + "one"
    events = kv.watch(key=key, initial=False)
    try:
        assert events.next() == Synced("start", 0, 0)
        kv.call("create", key + "/longer", 1)
        kv.call("create", key, 1)
        assert events.next() == PutEvent(key, 1, 1)
    finally:
        events.close()


# --- servers that refuse, fail or are not there --------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A memory `kv serve` with a token, no room for watchers and a 1 KiB body limit (small
    enough that a body over it arrives whole: a large one is refused before it is read, and
    the connection then closed under it may reset before the 413 is read; test_serve.py)."""
    env = {
        "KV_BACKEND": "memory",
        "KV_AUTH_TOKEN": "s3cret",
        "KV_MAX_WATCHERS": "0",
        "KV_MAX_BODY_BYTES": "1024",
    }
    server = start_kv(tmp_path_factory.mktemp("guarded"), env)
    yield server.url
    stop_kv(server)


def test_the_token(guarded: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KV_AUTH_TOKEN", raising=False)
    with Driver(kind, guarded) as anonymous, pytest.raises(Unauthorized, match="Bearer"):
        anonymous.call("get", "k")
    with Driver(kind, guarded, token="wrong") as wrong, pytest.raises(Unauthorized):
        wrong.call("create", "k", 1)
    monkeypatch.setenv("KV_AUTH_TOKEN", "s3cret")
    with Driver(kind, guarded) as client, pytest.raises(KeyNotFound):
        client.call("get", f"k-{kind}")
    with Driver(kind, guarded) as client:
        assert client.call("info")["service"] == "kv"


def test_a_body_over_the_limit(guarded: str, kind: str) -> None:
    with Driver(kind, guarded, token="s3cret") as client, pytest.raises(PayloadTooLarge) as e:
        client.call("create", f"big-{kind}", "x" * 2000)
    assert e.value.status == 413


def test_unavailable_watch_limit(guarded: str, kind: str) -> None:
    with Driver(kind, guarded, token="s3cret") as client, pytest.raises(Unavailable) as caught:
        client.watch("").next()
    assert caught.value.status == 503
    assert caught.value.retry_after is not None


def test_a_wrong_base_path_is_an_unexpected_response(live_kv: LiveKV, kind: str) -> None:
    with Driver(kind, live_kv.url + "/not-kv") as client, pytest.raises(UnexpectedResponse) as e:
        client.call("get", "k")
    assert e.value.status == 404 and "no route" in e.value.detail


def test_nothing_listening_and_no_answer(kind: str) -> None:
    with Driver(kind, f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ConnectionFailed) as refused:
            client.call("get", "k")
        assert not isinstance(refused.value, TimedOut)
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        silent = Driver(kind, f"http://127.0.0.1:{port}", timeout=0.3)
        with silent, pytest.raises(TimedOut, match="no answer in time"):
            silent.call("put", "k", 1)
