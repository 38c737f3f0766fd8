"""`AsyncClient`: kv over httpx, for asyncio. Its methods are written once in
kv.client.methods, and every rule lives in kv.client.core and kv.client.watching; this module
only sends, sleeps and reads, as kv.client.sync does, awaiting."""

import asyncio
import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Self

import httpx

from kv.client import core, errors
from kv.client.core import MAX_PAGE, ListCursor
from kv.client.methods import ClientMethods
from kv.client.model import Entry, Record
from kv.client.transport import outgoing, reply_of, stream_timeout, translated
from kv.client.watching import WatchEvent, WatchState


class AsyncClosing(ABC):
    """Closed by `aclose`, or on leaving its `async with` block."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class AsyncClient(
    ClientMethods[
        httpx.AsyncBaseTransport, AsyncIterator[Entry], AsyncIterator[Record], "AsyncWatch"
    ],
    AsyncClosing,
):
    """kv.client.Client for asyncio: the same methods, awaited (`list` and `watch` are
    iterated with `async for`). Close it with `aclose`, or use it as an async context
    manager."""

    def _open(self, transport: httpx.AsyncBaseTransport | None, options: dict[str, Any]) -> None:
        self._http = httpx.AsyncClient(transport=transport, **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def execute(self, call: core.Call[core.T]) -> core.T:
        """Send `call` (a request built by kv.client.core), retrying as the policy allows;
        its result, or the typed error of its reply."""
        retries = self.retry.start()
        while True:
            with translated(call.request):
                response = await self._http.send(outgoing(self._http, self.endpoint, call.request))
            reply = reply_of(response, response.content)
            delay = retries.delay(call.request, reply)
            if delay is None:
                return core.finish(call, reply)
            await asyncio.sleep(delay)

    async def _list(  # type: ignore[override]
        self, cursor: ListCursor
    ) -> AsyncIterator[Entry | Record]:
        while (call := cursor.next_call()) is not None:
            for item in cursor.take(await self.execute(call)):
                yield item

    def _watch(self, state: WatchState, read_timeout: float) -> "AsyncWatch":
        return AsyncWatch(self._events(state, read_timeout))

    async def _events(self, state: WatchState, read_timeout: float) -> AsyncGenerator[WatchEvent]:
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


class AsyncWatch(AsyncClosing):
    """The events of `AsyncClient.watch`: iterate over it with `async for`; leave the
    `async with` block (or `aclose`) to end the stream."""

    def __init__(self, events: AsyncGenerator[WatchEvent]) -> None:
        self._events = events

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events

    async def __anext__(self) -> WatchEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()
