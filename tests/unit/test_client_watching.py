"""The watch without I/O: the SSE decoder, and the state that keeps the caller's view whole
across lost streams."""

import json
from typing import Any

import pytest

from kv.client import errors
from kv.client.model import Record
from kv.client.sse import ServerEvent, SSEDecoder
from kv.client.watching import (
    DEFAULT_BACKOFF,
    Backoff,
    DeleteEvent,
    Interrupted,
    PutEvent,
    Synced,
    WatchEvent,
    WatchState,
)

STREAM = (
    b'event: ready\ndata: {"prefix":"a"}\n\n'
    b": idle\n\n"
    b'event: put\ndata: {"key":"a","value":"\xc3\xa9","revision":1}\n\n'
    b'event: delete\r\ndata: {"key":"a","revision":1,"reason":"expired"}\r\n\r\n'
    b"event: overflow\rdata: {}\r\r"
)
EXPECTED = [
    ServerEvent("ready", '{"prefix":"a"}'),
    ServerEvent("put", '{"key":"a","value":"é","revision":1}'),
    ServerEvent("delete", '{"key":"a","revision":1,"reason":"expired"}'),
    ServerEvent("overflow", "{}"),
]


def test_the_decoder_gives_whole_events_however_the_bytes_are_cut() -> None:
    assert SSEDecoder().feed(STREAM) == EXPECTED
    for cut in range(len(STREAM)):
        decoder = SSEDecoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == EXPECTED, cut
    decoder = SSEDecoder()
    assert [event for byte in STREAM for event in decoder.feed(bytes([byte]))] == EXPECTED


def test_the_decoder_joins_data_lines_and_skips_comments_and_empty_events() -> None:
    text = b"data: one\ndata:two\nid: 7\n\n: comment\nevent: nothing\n\n"
    assert SSEDecoder().feed(text) == [ServerEvent("message", "one\ntwo")]


# --- the state ---------------------------------------------------------------------------------

NOW = [100.0]


def state(**options: Any) -> WatchState:
    """A watch of "p/" with `watch`'s defaults but for `options`, on the NOW clock."""
    settings: dict[str, Any] = {
        "prefix": "p/", "key": None, "initial": True, "give_up_after": None,
        "backoff": DEFAULT_BACKOFF, "clock": lambda: NOW[0],
    }  # fmt: skip
    return WatchState(**(settings | options))


def put(key: str, value: object, revision: int) -> ServerEvent:
    data = {"key": key, "value": value, "revision": revision}
    return ServerEvent("put", json.dumps(data))


def delete(key: str, revision: int, reason: str = "deleted") -> ServerEvent:
    return ServerEvent("delete", json.dumps({"key": key, "revision": revision, "reason": reason}))


def apply(view: dict[str, Record], events: list[WatchEvent]) -> dict[str, Record]:
    """What a caller does with the events: a put sets, a delete removes."""
    for event in events:
        if isinstance(event, PutEvent):
            view[event.key] = event.record
        elif isinstance(event, DeleteEvent):
            view.pop(event.key, None)
    return view


def test_the_first_listing_is_handed_out_then_changes_follow() -> None:
    watch = state()
    first = watch.resync([Record("p/a", 1, 1), Record("p/b", [2], 3)])
    assert first == [
        PutEvent("p/a", 1, 1, None, resync=True),
        PutEvent("p/b", [2], 3, None, resync=True),
        Synced("start", 2, 0),
    ]
    assert watch.receive(put("p/a", "x", 2)) == [PutEvent("p/a", "x", 2)]
    assert watch.receive(delete("p/b", 3, "expired")) == [DeleteEvent("p/b", 3, "expired")]
    assert watch.receive(ServerEvent("ready", "{}")) == []
    assert watch.view == {"p/a": Record("p/a", "x", 2)}


def test_without_initial_the_first_listing_is_only_the_baseline() -> None:
    watch = state(initial=False)
    assert watch.resync([Record("p/a", 1, 1)]) == [Synced("start", 0, 0)]
    assert watch.view == {"p/a": Record("p/a", 1, 1)}


def test_after_a_loss_the_resync_turns_the_callers_view_into_the_listing() -> None:
    watch = state()
    caller = apply(
        {}, watch.resync([Record("p/a", 1, 1), Record("p/b", 1, 1), Record("p/c", 1, 1)])
    )
    apply(caller, watch.receive(put("p/c", 2, 2)))
    assert watch.receive(ServerEvent("overflow", "{}")) == []
    assert watch.closed
    [lost] = watch.lost(None)
    assert isinstance(lost, Interrupted) and lost.cause == "overflow"
    assert "fell too far behind" in lost.detail
    # Meanwhile: a deleted, b unchanged, c overwritten with the same revision after a
    # restart (only the value tells), d created.
    listing = [Record("p/b", 1, 1), Record("p/c", "other", 2), Record("p/d", 4, 1)]
    events = watch.resync(listing)
    assert events == [
        DeleteEvent("p/a", 1, "resync"),
        PutEvent("p/c", "other", 2, None, resync=True),
        PutEvent("p/d", 4, 1, None, resync=True),
        Synced("overflow", 2, 1),
    ]
    assert apply(caller, events) == {record.key: record for record in listing}


def test_a_cut_stream_is_disconnected_and_an_end_event_says_why() -> None:
    watch = state()
    watch.resync([])
    cut = errors.ConnectionFailed("ReadError: reset", request="GET /watch?prefix=p%2F")
    assert watch.lost(cut) == [Interrupted("disconnected", str(cut))]
    assert watch.lost(errors.ConnectionFailed("refused")) == []  # still down: said once
    assert watch.resync([]) == [Synced("disconnected", 0, 0)]
    watch.receive(ServerEvent("unavailable", "{}"))
    assert watch.lost(None)[0].cause == "unavailable"  # type: ignore[union-attr]


def test_errors_retrying_cannot_cure_end_the_watch() -> None:
    watch = state()
    watch.resync([])
    with pytest.raises(errors.Unauthorized):
        watch.lost(errors.Unauthorized("token", status=401))
    with pytest.raises(errors.UnexpectedResponse, match="a put event"):
        watch.receive(ServerEvent("put", "{not json"))


def test_a_first_connection_that_fails_is_raised_at_once() -> None:
    with pytest.raises(errors.ConnectionFailed, match="refused"):
        state().lost(errors.ConnectionFailed("refused"))
    with pytest.raises(errors.ConnectionFailed, match="before it was ready"):
        state().lost(None)


def test_the_watch_gives_up_after_give_up_after_seconds_of_loss() -> None:
    watch = state(give_up_after=30)
    watch.resync([])
    NOW[0] = 100.0
    assert len(watch.lost(errors.ConnectionFailed("cut"))) == 1
    NOW[0] = 129.0
    assert watch.lost(errors.ConnectionFailed("refused")) == []
    NOW[0] = 131.0
    with pytest.raises(errors.ConnectionFailed, match="refused"):
        watch.lost(errors.ConnectionFailed("refused"))


def test_reconnections_back_off_and_honour_retry_after() -> None:
    backoff = Backoff(first=0.1, most=5.0)
    assert backoff.delay(0) == 0.0
    assert [backoff.delay(n, lambda: 1.0) for n in range(1, 9)] == [
        0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0
    ]  # fmt: skip
    assert backoff.delay(3, lambda: 0.0) == pytest.approx(0.2)
    watch = state(backoff=Backoff(first=0.1, most=5.0))
    assert watch.next_delay(None) == 0.0  # the first attempt at once
    assert watch.next_delay(errors.Unavailable("down", retry_after=2.0)) == 2.0
    assert watch.next_delay(errors.Unavailable("down", retry_after=60.0)) == 5.0
    watch.resync([])
    assert watch.next_delay(None) == 0.0  # synced again: the next loss starts over


def test_a_key_watch_keeps_only_its_key_of_the_listing() -> None:
    watch = state(prefix=None, key="k", clock=lambda: 0.0)
    assert watch.request.target == "/watch?key=k"
    events = watch.resync([Record("k", 1, 1), Record("k/other", 2, 1)])
    assert events == [PutEvent("k", 1, 1, None, resync=True), Synced("start", 1, 0)]


def test_events_as_json_lines() -> None:
    assert PutEvent("k", {"a": 1}, 2).as_json() == {
        "event": "put", "key": "k", "value": {"a": 1}, "revision": 2, "resync": False
    }  # fmt: skip
    assert DeleteEvent("k", 2, "resync").as_json()["reason"] == "resync"
    assert Synced("start", 1, 0).as_json() == {
        "event": "synced", "cause": "start", "puts": 1, "deletes": 0
    }  # fmt: skip
    assert Interrupted("overflow", "x").as_json()["event"] == "interrupted"
