"""Watching without gaps, as a state machine without I/O (both clients drive it).

The contract's recipe to mirror a prefix is: open the watch, wait for `ready`, list the
prefix, then apply every event received since `ready`, in order, over the listing. The stream
ends with `overflow` or `unavailable`, or is cut; then the recipe starts again.

`WatchState` keeps the caller's view (every record of the watched keys, as the events it
handed out make it) and turns each listing into the events that change that view into the
listing: so the caller, applying each `PutEvent` (set the record) and `DeleteEvent` (remove
the key) in order, always holds what the store holds, whatever happened meanwhile (a deletion
while disconnected, a server that restarted with no data).

What the caller sees, in order:
  - after the first listing: a `PutEvent(resync=True)` per record (with `initial=True`), then
    `Synced("start")`;
  - every change from the stream, as `PutEvent` or `DeleteEvent` (reason deleted or expired);
  - when the stream is lost: `Interrupted(cause)`; then, once the client has reconnected and
    listed again, the puts and deletes (resync=True, a delete's reason "resync") that turn the
    view into the new listing, and `Synced(cause)`.
Events that follow a `Synced` may repeat changes the listing already showed (those committed
between `ready` and the listing): applying them again is harmless and the view converges, as
the contract says ("once the events received so far are applied, the copy equals the store
as of the last of them").
"""

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from kv.client import core, errors
from kv.client.model import JSONValue, Record, canonical, parse_record
from kv.client.sse import ServerEvent, SSEDecoder

HEARTBEAT_SECONDS = 15.0  # the server's idle comment: a read timeout must be well above it
DEFAULT_READ_TIMEOUT = 3 * HEARTBEAT_SECONDS


@dataclass(frozen=True, slots=True)
class PutEvent:
    """`key` now holds this record. `resync`: from a listing, not from the stream."""

    key: str
    value: JSONValue
    revision: int
    expires_at: datetime | None = None
    resync: bool = False

    @property
    def record(self) -> Record:
        return Record(self.key, self.value, self.revision, self.expires_at)

    def as_json(self) -> dict[str, Any]:
        return {"event": "put", **self.record.as_json(), "resync": self.resync}


@dataclass(frozen=True, slots=True)
class DeleteEvent:
    """`key` no longer exists; `revision` is the one it had. `reason`: `deleted` or `expired`
    from the stream, `resync` when a new listing no longer has it (deleted, expired or lost
    while the watch was down: which, nobody can tell)."""

    key: str
    revision: int
    reason: str

    @property
    def resync(self) -> bool:
        return self.reason == "resync"

    def as_json(self) -> dict[str, Any]:
        return {"event": "delete", "key": self.key, "revision": self.revision,
                "reason": self.reason}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The stream was lost (`cause`: `overflow`, `unavailable` or `disconnected`): changes
    from now on are not seen until the next `Synced`, whose resync events catch up."""

    cause: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"event": "interrupted", "cause": self.cause, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Synced:
    """The view equals a listing just read: after the start (`cause` "start") or after the
    interruption of that cause. `puts` and `deletes` count the resync events before it."""

    cause: str
    puts: int
    deletes: int

    def as_json(self) -> dict[str, Any]:
        return {"event": "synced", "cause": self.cause, "puts": self.puts,
                "deletes": self.deletes}  # fmt: skip


WatchEvent: TypeAlias = PutEvent | DeleteEvent | Interrupted | Synced


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between reconnection attempts: the first at once, then `first` doubling up to
    `most` seconds, each scaled by a random factor from 0.5 to 1 (so that many watchers of a
    restarted server do not come back in step)."""

    first: float = 0.1
    most: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        if attempt <= 0:
            return 0.0
        return float(min(self.most, self.first * 2 ** (attempt - 1)) * (0.5 + rand() / 2))


DEFAULT_BACKOFF = Backoff()


class WatchState:
    """One `watch` call: its request, the caller's view, and what the stream has said."""

    def __init__(
        self,
        *,
        prefix: str | None,
        key: str | None,
        initial: bool,
        give_up_after: float | None,
        backoff: Backoff,
        clock: Callable[[], float],
    ) -> None:
        """Every option as `watch` was called with it (its defaults are written there only)."""
        self.request = core.watch_request(prefix=prefix, key=key)
        self.prefix = prefix
        self.key = key
        self.initial = initial
        self.give_up_after = give_up_after
        self.backoff = backoff
        self.clock = clock
        self.view: dict[str, Record] = {}
        self.started = False  # a listing was taken once: from then on, reconnect on loss
        self.synced = False  # the view follows the stream
        self.closed = False  # the server said the stream ends (overflow or unavailable)
        self.cause = "start"  # why the next listing is taken
        self.failures = 0  # reconnection attempts since the stream was lost
        self.lost_at = 0.0
        self._decoder = SSEDecoder()

    def connected(self) -> None:
        """A new stream answered 200: decode it from its start."""
        self._decoder = SSEDecoder()
        self.closed = False

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        return self._decoder.feed(chunk)

    def resync(self, records: Iterable[Record]) -> list[WatchEvent]:
        """The events that make the view equal `records` (a listing taken after `ready`)."""
        listed = {record.key: record for record in records}
        if self.key is not None:
            listed = {self.key: listed[self.key]} if self.key in listed else {}
        events: list[WatchEvent] = []
        for key in sorted(self.view.keys() | listed.keys()):
            old, new = self.view.get(key), listed.get(key)
            if new is None:
                assert old is not None
                events.append(DeleteEvent(key, old.revision, "resync"))
            elif old is None or _differ(old, new):
                events.append(PutEvent(key, new.value, new.revision, new.expires_at, True))
        if not self.started and not self.initial:
            events = []  # the first listing is the baseline the caller did not ask to see
        self.view = listed
        puts = sum(isinstance(event, PutEvent) for event in events)
        events.append(Synced(self.cause, puts, len(events) - puts))
        self.started = self.synced = True
        self.failures = 0
        return events

    def receive(self, message: ServerEvent) -> list[WatchEvent]:
        """The events of one message of the stream (after `ready` and its listing)."""
        if message.event in ("overflow", "unavailable"):
            self.cause = message.event
            self.closed = True
            return []
        if message.event not in ("put", "delete"):
            return []  # a second `ready`, or an event a later server adds: not a change
        try:
            data = json.loads(message.data)
            if message.event == "put":
                record = parse_record(data)
                self.view[record.key] = record
                return [PutEvent(record.key, record.value, record.revision, record.expires_at)]
            key, revision, reason = data["key"], data["revision"], data["reason"]
            if not (isinstance(key, str) and isinstance(revision, int) and isinstance(reason, str)):
                raise ValueError("key, revision or reason of the wrong type")
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.UnexpectedResponse(
                f"a {message.event} event kv does not send ({exc}): {message.data[:200]}",
                request=str(self.request),
            ) from None
        self.view.pop(key, None)
        return [DeleteEvent(key, revision, reason)]

    def lost(self, error: errors.KVError | None) -> list[WatchEvent]:
        """The stream ended (`error`: how, when it was not the server's own end). Raises when
        the watch cannot go on: an error retrying cannot cure, a first connection that
        failed, or a loss longer than `give_up_after`. Else returns `Interrupted` when the
        view was being followed until now."""
        if error is not None and not isinstance(
            error, errors.ConnectionFailed | errors.Unavailable
        ):
            raise error
        if not self.started:
            raise error or errors.ConnectionFailed(
                "the watch stream ended before it was ready", request=str(self.request)
            )
        closed, self.closed = self.closed, False
        if self.synced:
            self.synced = False
            self.lost_at = self.clock()
            if not closed:
                self.cause = "disconnected"
            detail = str(error) if error is not None else _ENDS[self.cause]
            return [Interrupted(self.cause, detail)]
        if self.give_up_after is not None and self.clock() - self.lost_at > self.give_up_after:
            raise error or errors.ConnectionFailed(
                f"the watch was lost for over {self.give_up_after:g} s",
                request=str(self.request),
            )
        return []

    def next_delay(self, error: errors.KVError | None) -> float:
        """Seconds to wait before the next connection: what a 503 asked for, else backoff."""
        delay = self.backoff.delay(self.failures)
        self.failures += 1
        if isinstance(error, errors.Unavailable) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self.backoff.most))
        return delay


_ENDS = {
    "overflow": "the server ended the stream: this watcher fell too far behind",
    "unavailable": "the server ended the stream: its backend or the server is unavailable",
    "disconnected": "the stream ended without an end event",
}


def _differ(old: Record, new: Record) -> bool:
    return (old.revision, old.expires_at, canonical(old.value)) != (
        new.revision,
        new.expires_at,
        canonical(new.value),
    )
