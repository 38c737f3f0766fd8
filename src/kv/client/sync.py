"""`Client`: kv over httpx, blocking. Every rule lives in kv.client.core and
kv.client.watching; this module only sends, sleeps and reads."""

import builtins
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from kv.client import core, errors
from kv.client.core import MAX_PAGE, ListCursor
from kv.client.model import (
    Deleted,
    Entry,
    JSONValue,
    Record,
    Seconds,
    TxnOp,
    TxnResult,
)
from kv.client.retry import DEFAULT_RETRY, RetryPolicy
from kv.client.transport import (
    DEFAULT_TIMEOUT,
    client_options,
    reply_of,
    stream_timeout,
    translated,
)
from kv.client.urls import Endpoint
from kv.client.watching import (
    DEFAULT_BACKOFF,
    DEFAULT_READ_TIMEOUT,
    Backoff,
    WatchEvent,
    WatchState,
)


class Client:
    """A kv server at `url` (else `$KV_URL`, else http://127.0.0.1:8000), which may carry a
    path prefix (`https://host/kv-api`). `token` (else `$KV_AUTH_TOKEN`) is sent as a bearer
    token. Every request is bounded by `timeout` seconds; reads are retried after a 503 as
    `retry` says; writes never are. Close it, or use it as a context manager."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        watch_read_timeout: float = DEFAULT_READ_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout = timeout
        self.watch_read_timeout = watch_read_timeout
        self.retry = retry
        self._http = httpx.Client(transport=transport, **client_options(token, timeout))

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- single keys ------------------------------------------------------------------------

    def get(self, key: str) -> Record:
        """The record of `key`; KeyNotFound when absent."""
        return self.execute(core.get(key))

    def create(self, key: str, value: JSONValue, *, ttl: Seconds | None = None) -> Record:
        """Create `key` at revision 1; KeyExists when it is present."""
        return self.execute(core.create(key, value, ttl=ttl))

    def put(
        self,
        key: str,
        value: JSONValue,
        *,
        if_revision: int | None = None,
        ttl: Seconds | None = None,
    ) -> Record:
        """Overwrite a present `key` (KeyNotFound otherwise), only while it is at
        `if_revision` when given (RevisionMismatch otherwise). Without `ttl`, an expiry
        the record had is removed."""
        return self.execute(core.put(key, value, if_revision=if_revision, ttl=ttl))

    def upsert(self, key: str, value: JSONValue, *, ttl: Seconds | None = None) -> Record:
        """Create or overwrite `key` (PUT /v1/{key})."""
        return self.execute(core.put(key, value, ttl=ttl, surface="/v1"))

    def delete(self, key: str, *, if_revision: int | None = None) -> Deleted:
        """Delete `key` (KeyNotFound when absent), only at `if_revision` when given."""
        return self.execute(core.delete(key, if_revision=if_revision))

    # --- many keys --------------------------------------------------------------------------

    @overload
    def list(
        self,
        prefix: str = "",
        *,
        values: Literal[False] = False,
        page_size: int = ...,
        limit: int | None = ...,
    ) -> Iterator[Entry]: ...

    @overload
    def list(
        self,
        prefix: str = "",
        *,
        values: Literal[True],
        page_size: int = ...,
        limit: int | None = ...,
    ) -> Iterator[Record]: ...

    def list(
        self,
        prefix: str = "",
        *,
        values: bool = False,
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[Entry] | Iterator[Record]:
        """Every record whose key starts with `prefix`, in the order of the keys' UTF-8
        bytes, fetched a page of `page_size` at a time as the iteration goes; at most `limit`
        of them. `values`: Records with their values, else Entries (key, revision,
        expires_at). A key present for the whole iteration is seen exactly once."""
        return self._list(ListCursor(prefix, values, page_size, limit))  # type: ignore[return-value]

    def _list(self, cursor: ListCursor) -> Iterator[Entry | Record]:
        while (call := cursor.next_call()) is not None:
            yield from cursor.take(self.execute(call))

    def txn(self, ops: Sequence[TxnOp | Mapping[str, Any]]) -> builtins.list[TxnResult]:
        """Apply `ops` all together or none (TransactionFailed names the first that failed);
        their results in order."""
        return self.execute(core.txn(ops))

    def watch(
        self,
        prefix: str | None = None,
        *,
        key: str | None = None,
        initial: bool = True,
        give_up_after: float | None = None,
        read_timeout: float | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> "Watch":
        """The changes under `prefix` ("" for every key) or to `key`, as events, reconnecting
        and listing again when the stream is lost (see kv.client.watching for what the caller
        sees). The first connection must succeed (else its error is raised); later ones are
        retried with `backoff` for `give_up_after` seconds (None: for ever). `read_timeout`
        (default `watch_read_timeout`) is how long a silent stream is trusted: keep it above
        the server's 15 s heartbeat."""
        state = WatchState(
            prefix=prefix, key=key, initial=initial, give_up_after=give_up_after,
            backoff=backoff, clock=time.monotonic,
        )  # fmt: skip
        return Watch(self._watch(state, read_timeout or self.watch_read_timeout))

    def _watch(self, state: WatchState, read_timeout: float) -> Generator[WatchEvent]:
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

    # --- the service ------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """GET /: the service's name, version and backend."""
        return self.execute(core.service_info())

    def execute(self, call: core.Call[core.T]) -> core.T:
        """Send `call` (a request built by kv.client.core), retrying as the policy allows;
        its result, or the typed error of its reply."""
        request = call.request
        retries = self.retry.start()
        while True:
            with translated(request):
                response = self._http.request(
                    request.method,
                    self.endpoint.url(request.target),
                    content=request.body,
                    headers=request.headers,
                )
            reply = reply_of(response, response.content)
            delay = retries.delay(request, reply)
            if delay is None:
                return core.finish(call, reply)
            time.sleep(delay)


class Watch:
    """The events of `Client.watch`: iterate over it; leave the `with` block (or `close`)
    to end the stream."""

    def __init__(self, events: Generator[WatchEvent]) -> None:
        self._events = events

    def __iter__(self) -> Iterator[WatchEvent]:
        return self._events

    def __next__(self) -> WatchEvent:
        return next(self._events)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._events.close()
