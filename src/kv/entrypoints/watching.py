"""`GET /watch?prefix=P` or `?key=K`: changes as Server-Sent Events, until the client leaves.

The stream: `event: ready` once the watch is in place, then `put` and `delete` events (JSON
data, each key's in commit order), a comment line every HEARTBEAT_SECONDS while idle (one
timer per watcher and period: it may come between events too), and at the end `overflow`
(the watcher fell too far behind: list again) or `unavailable` (the backend's feed failed,
or the server is stopping). A client that stops reading is dropped by the connection's send
deadline (kv.entrypoints.protocol).
"""

import asyncio
import contextlib
import time

import orjson
from starlette.types import Receive, Scope, Send

from kv.domain.commands import Watch
from kv.domain.errors import ChangesLost, KVError
from kv.domain.model import Change, Record, parse_key
from kv.domain.watch import WatchClosed, Watcher, WatcherOverflow
from kv.entrypoints.handlers import record_json
from kv.entrypoints.problems import BadRequest
from kv.entrypoints.protocol import STOP_STREAM
from kv.entrypoints.requests import Call, Stream

HEARTBEAT_SECONDS = 15.0

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies (nginx) must not hold events back
]


async def watch(call: Call) -> Stream:
    query = call.query(("prefix", "key"))
    if ("prefix" in query) == ("key" in query):
        raise BadRequest("give exactly one of prefix (empty: every key) or key")
    if "key" in query:
        command = Watch(parse_key(query["key"]), exact=True)
    else:
        command = Watch(query["prefix"])
    call.key = command.prefix
    watcher = await call.service.watch(command)
    return WatchStream(call, watcher)


class ClientLeft(KVError):
    def __init__(self) -> None:
        super().__init__(None)


class WatchStream(Stream):
    """The SSE response of one watcher; unsubscribes it when the stream ends, however."""

    def __init__(self, call: Call, watcher: Watcher) -> None:
        super().__init__()
        self.call = call
        self.watcher = watcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        watcher = self.watcher
        stop = scope[STOP_STREAM] = asyncio.Event()  # set by kv serve's protocol at shutdown
        listener = asyncio.get_running_loop().create_task(_until_gone(receive, stop, watcher))
        ended = "client"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            selector = "key" if watcher.watch.exact else "prefix"
            ready = orjson.dumps({selector: watcher.watch.prefix})
            await _events(send, b"event: ready\ndata: %b\n\n" % ready)
            while True:
                try:
                    changes = await watcher.next(idle=HEARTBEAT_SECONDS)
                except (WatcherOverflow, ChangesLost):
                    ended = "overflow"
                    await _events(send, b"event: overflow\ndata: {}\n\n")
                    break
                except ClientLeft:
                    break
                except KVError as exc:  # the feed failed, or the service is stopping
                    ended = "shutdown" if isinstance(exc, WatchClosed) else "unavailable"
                    await _events(send, b"event: unavailable\ndata: {}\n\n")
                    break
                await _events(send, b"".join(map(event, changes)) if changes else b": idle\n\n")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            listener.cancel()
            self.call.service.unwatch(watcher)
            self.call.extra = {
                "phase": "closed",
                "ended": ended,
                "events": watcher.sent,
                "seconds": round(time.monotonic() - started, 3),
            }


async def _until_gone(receive: Receive, stop: asyncio.Event, watcher: Watcher) -> None:
    """End the watcher when the client goes away or the server stops, whichever is first."""

    async def disconnected() -> None:
        with contextlib.suppress(OSError):
            while (await receive())["type"] != "http.disconnect":
                pass

    client = asyncio.ensure_future(disconnected())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((client, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        client.cancel()
        stopping.cancel()
    watcher.end(WatchClosed() if stop.is_set() else ClientLeft())


async def _events(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


# The events of the latest changes, by the change's identity: every watcher of a change is
# handed the same Change object, so the first to send it encodes it for all of them. An entry
# holds its change, so no other object can take its id while it is cached; large events are
# not kept (encoding is then small beside sending them).
_CACHED_EVENTS = 256
_CACHED_EVENT_BYTES = 16384
_events_of: dict[int, tuple[Change, bytes]] = {}


def event(change: Change) -> bytes:
    """One change as an SSE event: `put` with the record, `delete` with the revision it had."""
    cached = _events_of.get(id(change))
    if cached is not None:
        return cached[1]
    data = _encode(change)
    if len(data) <= _CACHED_EVENT_BYTES:
        if len(_events_of) >= _CACHED_EVENTS:
            del _events_of[next(iter(_events_of))]  # the oldest
        _events_of[id(change)] = (change, data)
    return data


def _encode(change: Change) -> bytes:
    if change.value is not None:
        record = Record(change.key, change.value, change.revision, change.expires_at)
        return b"event: put\ndata: %b\n\n" % record_json(record)
    reason = b"expired" if change.expired else b"deleted"
    return b'event: delete\ndata: {"key":%b,"revision":%d,"reason":"%b"}\n\n' % (
        orjson.dumps(change.key),
        change.revision,
        reason,
    )
