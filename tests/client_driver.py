"""One interface over kv.client's Client and AsyncClient, so that every client test runs the
same scenario on both: `Driver("sync" | "async", url, ...)`. The async client runs on one
`asyncio.Runner` (one event loop) for the driver's whole life."""

import asyncio
from typing import Any

from kv.client import AsyncClient, AsyncWatch, Client, Watch, WatchEvent

KINDS = ["sync", "async"]


class Events:
    """A watch's events, one `next()` at a time."""

    def __init__(self, driver: "Driver", watch: Watch | AsyncWatch) -> None:
        self.driver = driver
        self.watch = watch

    def next(self) -> WatchEvent:
        if isinstance(self.watch, Watch):
            return next(self.watch)
        event: WatchEvent = self.driver.run(anext(self.watch))
        return event

    def take(self, count: int) -> list[WatchEvent]:
        return [self.next() for _ in range(count)]

    def close(self) -> None:
        if isinstance(self.watch, Watch):
            self.watch.close()
        else:
            self.driver.run(self.watch.aclose())


class Driver:
    def __init__(self, kind: str, url: str | None = None, **options: Any) -> None:
        self.kind = kind
        self.runner: asyncio.Runner | None = None
        self.client: Client | AsyncClient
        if kind == "sync":
            self.client = Client(url, **options)
        else:
            self.runner = asyncio.Runner()
            self.client = AsyncClient(url, **options)

    def run(self, awaitable: Any) -> Any:
        assert self.runner is not None
        return self.runner.run(awaitable)

    def call(self, method: str, *args: Any, **options: Any) -> Any:
        """`client.<method>(...)`: get, create, put, upsert, delete, txn, info, execute."""
        result = getattr(self.client, method)(*args, **options)
        return result if self.runner is None else self.run(result)

    def list(self, *args: Any, **options: Any) -> list[Any]:
        items = self.client.list(*args, **options)
        if self.runner is None:
            return list(items)  # type: ignore[arg-type]

        async def collect() -> list[Any]:
            return [item async for item in items]  # type: ignore[union-attr]

        return list(self.run(collect()))

    def watch(self, *args: Any, **options: Any) -> Events:
        return Events(self, self.client.watch(*args, **options))

    def close(self) -> None:
        if isinstance(self.client, Client):
            self.client.close()
        else:
            self.run(self.client.aclose())
            assert self.runner is not None
            self.runner.close()

    def __enter__(self) -> "Driver":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
