"""`AsyncClient`: kv over httpx, for asyncio. The twin of kv.client.sync, line for line: every
rule lives in kv.client.core and kv.client.watching; this module only sends, sleeps and
reads."""

import asyncio
import builtins
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
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


class AsyncClient:
    """kv.client.Client for asyncio: the same methods, awaited (`list` and `watch` are
    iterated with `async for`). Close it with `aclose`, or use it as an async context
    manager."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        watch_read_timeout: float = DEFAULT_READ_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout = timeout
        self.watch_read_timeout = watch_read_timeout
        self.retry = retry
        self._http = httpx.AsyncClient(transport=transport, **client_options(token, timeout))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- single keys ------------------------------------------------------------------------

    async def get(self, key: str) -> Record:
        """The record of `key`; KeyNotFound when absent."""
        return await self.execute(core.get(key))

    async def create(self, key: str, value: JSONValue, *, ttl: Seconds | None = None) -> Record:
        """Create `key` at revision 1; KeyExists when it is present."""
        return await self.execute(core.create(key, value, ttl=ttl))

    async def put(
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
        return await self.execute(core.put(key, value, if_revision=if_revision, ttl=ttl))

    async def upsert(self, key: str, value: JSONValue, *, ttl: Seconds | None = None) -> Record:
        """Create or overwrite `key` (PUT /v1/{key})."""
        return await self.execute(core.put(key, value, ttl=ttl, surface="/v1"))

    async def delete(self, key: str, *, if_revision: int | None = None) -> Deleted:
        """Delete `key` (KeyNotFound when absent), only at `if_revision` when given."""
        return await self.execute(core.delete(key, if_revision=if_revision))

    # --- many keys --------------------------------------------------------------------------

    @overload
    def list(
        self,
        prefix: str = "",
        *,
        values: Literal[False] = False,
        page_size: int = ...,
        limit: int | None = ...,
    ) -> AsyncIterator[Entry]: ...

    @overload
    def list(
        self,
        prefix: str = "",
        *,
        values: Literal[True],
        page_size: int = ...,
        limit: int | None = ...,
    ) -> AsyncIterator[Record]: ...

    def list(
        self,
        prefix: str = "",
        *,
        values: bool = False,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[Entry] | AsyncIterator[Record]:
        """Every record whose key starts with `prefix`, in the order of the keys' UTF-8
        bytes, fetched a page of `page_size` at a time as the iteration goes; at most `limit`
        of them. `values`: Records with their values, else Entries (key, revision,
        expires_at). A key present for the whole iteration is seen exactly once."""
        return self._list(ListCursor(prefix, values, page_size, limit))  # type: ignore[return-value]

    async def _list(self, cursor: ListCursor) -> AsyncIterator[Entry | Record]:
        while (call := cursor.next_call()) is not None:
            for item in cursor.take(await self.execute(call)):
                yield item

    async def txn(self, ops: Sequence[TxnOp | Mapping[str, Any]]) -> builtins.list[TxnResult]:
        """Apply `ops` all together or none (TransactionFailed names the first that failed);
        their results in order."""
        return await self.execute(core.txn(ops))

    def watch(
        self,
        prefix: str | None = None,
        *,
        key: str | None = None,
        initial: bool = True,
        give_up_after: float | None = None,
        read_timeout: float | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> "AsyncWatch":
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
        return AsyncWatch(self._watch(state, read_timeout or self.watch_read_timeout))

    async def _watch(self, state: WatchState, read_timeout: float) -> AsyncGenerator[WatchEvent]:
        request = state.request
        timeout = stream_timeout(self.timeout, read_timeout)
        while True:
            failure: errors.KVError | None = None
            try:
                with translated(request):
                    async with self._http.stream(
                        request.method, self.endpoint.url(request.target),
                        headers=request.headers, timeout=timeout,
                    ) as response:  # fmt: skip
                        if response.status_code != 200:
                            raise core.error_of(reply_of(response, await response.aread()))
                        state.connected()
                        async for chunk in response.aiter_bytes():
                            for message in state.feed(chunk):
                                if message.event == "ready":
                                    events = state.resync(await self._snapshot(state))
                                else:
                                    events = state.receive(message)
                                for event in events:
                                    yield event
                            if state.closed:
                                break
            except errors.KVError as error:
                error.request = error.request or str(request)
                failure = error
            for event in state.lost(failure):
                yield event
            await asyncio.sleep(state.next_delay(failure))

    async def _snapshot(self, state: WatchState) -> builtins.list[Record]:
        if state.key is None:
            listing = self.list(state.prefix or "", values=True, page_size=MAX_PAGE)
            return [record async for record in listing]
        try:
            return [await self.get(state.key)]
        except errors.KeyNotFound:
            return []

    # --- the service ------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """GET /: the service's name, version and backend."""
        return await self.execute(core.service_info())

    async def execute(self, call: core.Call[core.T]) -> core.T:
        """Send `call` (a request built by kv.client.core), retrying as the policy allows;
        its result, or the typed error of its reply."""
        request = call.request
        retries = self.retry.start()
        while True:
            with translated(request):
                response = await self._http.request(
                    request.method,
                    self.endpoint.url(request.target),
                    content=request.body,
                    headers=request.headers,
                )
            reply = reply_of(response, response.content)
            delay = retries.delay(request, reply)
            if delay is None:
                return core.finish(call, reply)
            await asyncio.sleep(delay)


class AsyncWatch:
    """The events of `AsyncClient.watch`: iterate over it with `async for`; leave the
    `async with` block (or `aclose`) to end the stream."""

    def __init__(self, events: AsyncGenerator[WatchEvent]) -> None:
        self._events = events

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events

    async def __anext__(self) -> WatchEvent:
        return await anext(self._events)

    async def __aenter__(self) -> "AsyncWatch":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._events.aclose()
