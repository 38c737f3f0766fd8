"""`Client`: kv over httpx, blocking. Its methods are written once in kv.client.methods, and
every rule lives in kv.client.core and kv.client.watching; this module only sends, sleeps and
reads."""

import builtins
import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from typing import Any, Self

import httpx

from kv.client import core, errors
from kv.client.core import MAX_PAGE, ListCursor
from kv.client.methods import ClientMethods
from kv.client.model import Entry, Record
from kv.client.transport import outgoing, reply_of, stream_timeout, translated
from kv.client.watching import WatchEvent, WatchState


class Closing(ABC):
    """Closed by `close`, or on leaving its `with` block."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Client(
    ClientMethods[httpx.BaseTransport, Iterator[Entry], Iterator[Record], "Watch"], Closing
):
    """A kv server at `url` (else `$KV_URL`, else http://127.0.0.1:8000), which may carry a
    path prefix (`https://host/kv-api`). `token` (else `$KV_AUTH_TOKEN`) is sent as a bearer
    token. Every request is bounded by `timeout` seconds; reads are retried after a 503 as
    `retry` says; writes never are. Close it, or use it as a context manager."""

    def _open(self, transport: httpx.BaseTransport | None, options: dict[str, Any]) -> None:
        self._http = httpx.Client(transport=transport, **options)

    def close(self) -> None:
        self._http.close()

    def execute(self, call: core.Call[core.T]) -> core.T:
        """Send `call` (a request built by kv.client.core), retrying as the policy allows;
        its result, or the typed error of its reply."""
        retries = self.retry.start()
        while True:
            with translated(call.request):
                response = self._http.send(outgoing(self._http, self.endpoint, call.request))
            reply = reply_of(response, response.content)
            delay = retries.delay(call.request, reply)
            if delay is None:
                return core.finish(call, reply)
            time.sleep(delay)

    def _list(self, cursor: ListCursor) -> Iterator[Entry | Record]:  # type: ignore[override]
        while (call := cursor.next_call()) is not None:
            yield from cursor.take(self.execute(call))

    def _watch(self, state: WatchState, read_timeout: float) -> "Watch":
        return Watch(self._events(state, read_timeout))

    def _events(self, state: WatchState, read_timeout: float) -> Generator[WatchEvent]:
        request = state.request
        timeout = stream_timeout(self.timeout, read_timeout)
        while True:
            failure: errors.KVError | None = None
            try:
                with translated(request), self._http.stream(
                    request.method, self.endpoint.url(request.target),
                    headers=request.headers, timeout=timeout,
                ) as response:  # fmt: skip
                    if response.status_code != 200:
                        raise core.error_of(reply_of(response, response.read()))
                    state.connected()
                    for chunk in response.iter_bytes():
                        for message in state.feed(chunk):
                            if message.event == "ready":
                                events = state.resync(self._snapshot(state))
                            else:
                                events = state.receive(message)
                            yield from events
                        if state.closed:
                            break
            except errors.KVError as error:
                error.request = error.request or str(request)
                failure = error
            yield from state.lost(failure)
            time.sleep(state.next_delay(failure))

    def _snapshot(self, state: WatchState) -> builtins.list[Record]:
        if state.key is None:
            return list(self.list(state.prefix or "", values=True, page_size=MAX_PAGE))
        try:
            return [self.get(state.key)]
        except errors.KeyNotFound:
            return []


class Watch(Closing):
    """The events of `Client.watch`: iterate over it; leave the `with` block (or `close`)
    to end the stream."""

    def __init__(self, events: Generator[WatchEvent]) -> None:
        self._events = events

    def __iter__(self) -> Iterator[WatchEvent]:
        return self._events

    def __next__(self) -> WatchEvent:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
