"""Prometheus metrics: HTTP requests, backend calls and the memory backend's size.

The hot path never calls prometheus-client. Updating a labelled prometheus-client child
costs about 1 µs (a lock and several calls per value), and a request would pay that three
or four times (~8 µs a request, some 8% of the memory backend's throughput, measured). So a
request adds its duration to a plain-Python histogram (`Series`: a sum and bucket counts,
found by one dict lookup on (route, method, status) and one `bisect`); this is safe without
locks because only the event loop's thread records. A scrape turns the series into metric
families through prometheus-client's public `Collector` interface and its encoders.

Several worker processes (`KV_WORKERS` > 1): every worker writes its series to a file of its
own in `KV_METRICS_DIR` every PUBLISH_SECONDS (and at exit), and a scrape, whichever worker
answers, adds up its own series and every other worker's file. `kv serve --workers N`
creates (and removes) such a directory when none is given.
"""

import asyncio
import contextlib
import os
import re
from bisect import bisect_left
from collections.abc import AsyncGenerator, Awaitable, Coroutine, Iterable, Sequence, Sized
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kv.domain import txn
from kv.domain.model import Change, Key, Page, Record, Stale
from kv.domain.ports import Repository

PUBLISH_SECONDS = 1.0  # with several workers: how stale another worker's numbers may be

# Seconds. A memory request takes ~0.1 ms, a networked backend ~1 ms, a timeout 2 s.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BACKEND_BUCKETS = (0.0001, 0.00025, *REQUEST_BUCKETS)

# Methods outside this set share one label value, so a client cannot grow the series.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
)
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "unmatched"

BACKEND_OPERATIONS = (
    "get",
    "create",
    "replace",
    "upsert",
    "delete",
    "list",
    "transact",
    "clear",
    "ping",
)

_CONVERTOR = re.compile(r"\{(\w+):\w+\}")
T = TypeVar("T")


def strip_convertors(path: str) -> str:
    """`/kv/{key:anypath}` -> `/kv/{key}`: a route's template as OpenAPI and people write it."""
    return _CONVERTOR.sub(r"{\1}", path)


class Series:
    """Durations recorded since start: their sum and per-bucket counts (not cumulative), the
    last count being the +Inf bucket. `errors` counts calls that raised (backend calls)."""

    __slots__ = ("bounds", "counts", "errors", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.errors = 0

    def add(self, seconds: float) -> None:
        self.total += seconds
        # The first bucket whose upper bound is >= seconds (Prometheus buckets include it).
        self.counts[bisect_left(self.bounds, seconds)] += 1

    def dump(self) -> list[Any]:
        return [self.counts, self.total, self.errors]

    def merge(self, dumped: list[Any]) -> None:
        counts, total, errors = dumped
        self.counts = [mine + theirs for mine, theirs in zip(self.counts, counts, strict=True)]
        self.total += total
        self.errors += errors

    def copy(self) -> "Series":
        twin = Series(self.bounds)
        twin.merge(self.dump())
        return twin


Snapshot = dict[str, dict[str, Series]]
"""{"http": {"route method status": series}, "backend": {operation: series}}"""


class Metrics:
    """Every series of one app, and the registry that exposes them."""

    def __init__(self, *, backend: str, directory: str | None = None) -> None:
        self.backend = backend
        self.directory = None if directory is None else Path(directory)
        self._file = None if directory is None else Path(directory, f"{os.getpid()}.json")
        # (route path, method, status) -> its series, labels built once.
        self._http: dict[tuple[str, str, int], Series] = {}
        self._backend: dict[str, Series] = {}
        self._keys: Sized | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # --- recording (the hot path) --------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request to the route whose path template is `route`."""
        series = self._http.get((route, method, status))
        if series is None:
            series = self._new_request_series(route, method, status)
        series.total += seconds  # Series.add, inlined: this runs for every request
        series.counts[bisect_left(REQUEST_BUCKETS, seconds)] += 1

    def _new_request_series(self, route: str, method: str, status: int) -> Series:
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD  # one series for every unknown method, so few entries
            series = self._http.get((route, method, status))
            if series is not None:
                return series
        series = self._http[(route, method, status)] = Series(REQUEST_BUCKETS)
        return series

    def instrument(self, repository: Repository) -> "InstrumentedRepository":
        """`repository`, its calls timed and their errors counted under this app's backend."""
        if not self._backend:
            self._backend = {op: Series(BACKEND_BUCKETS) for op in BACKEND_OPERATIONS}
        return InstrumentedRepository(repository, self._backend)

    def count_keys(self, repository: Sized) -> None:
        """Publish `len(repository)` as `kv_memory_keys`, read at each scrape (so free)."""
        self._keys = repository

    def stop_counting_keys(self) -> None:
        self._keys = None

    # --- several processes ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        http = {
            " ".join((strip_convertors(route), method, str(status))): series
            for (route, method, status), series in self._http.items()
        }
        return {"http": http, "backend": dict(self._backend)}

    def publish(self) -> None:
        """Write this process's series for the other workers' scrapes (several workers)."""
        if self._file is None:
            return
        data = {
            kind: {name: series.dump() for name, series in entries.items()}
            for kind, entries in self.snapshot().items()
        }
        partial = self._file.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(data))
        partial.replace(self._file)  # atomic: a scrape never reads half a file

    async def run(self, interval: float = PUBLISH_SECONDS) -> None:
        """With several workers, publish every `interval` seconds until cancelled (the owner
        publishes once more at exit). A single process has nothing to publish."""
        while self._file is not None:
            await asyncio.sleep(interval)
            self.publish()

    def everyone(self) -> Snapshot:
        """This process's series added to those the other workers published."""
        merged = self.snapshot()
        if self.directory is None:
            return merged
        merged = {
            kind: {n: s.copy() for n, s in entries.items()} for kind, entries in merged.items()
        }
        for path in self.directory.glob("*.json"):
            if path == self._file:
                continue
            with contextlib.suppress(OSError, ValueError):  # a worker's file being replaced
                data = orjson.loads(path.read_bytes())
                for kind, bounds in (("http", REQUEST_BUCKETS), ("backend", BACKEND_BUCKETS)):
                    for name, dumped in data.get(kind, {}).items():
                        merged[kind].setdefault(name, Series(bounds)).merge(dumped)
        return merged

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape, in the format the `Accept` header asks for."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _Collector(Collector):
    """Turns the series into metric families at each scrape (prometheus-client's public API)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        metrics = self.metrics
        snapshot = metrics.everyone()
        requests = CounterMetricFamily(
            "kv_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            labels=("route", "method", "status"),
        )
        durations = HistogramMetricFamily(
            "kv_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route and method.",
            labels=("route", "method"),
        )
        by_route: dict[tuple[str, str], Series] = {}
        for name, series in sorted(snapshot["http"].items()):
            route, method, status = name.split(" ")
            requests.add_metric([route, method, status], sum(series.counts))
            by_route.setdefault((route, method), Series(REQUEST_BUCKETS)).merge(series.dump())
        for (route, method), series in by_route.items():
            durations.add_metric([route, method], _buckets(series), series.total)
        yield requests
        yield durations
        if snapshot["backend"]:
            calls = HistogramMetricFamily(
                "kv_backend_call_duration_seconds",
                "Duration of calls to the storage backend, by backend and repository operation.",
                labels=("backend", "operation"),
            )
            errors = CounterMetricFamily(
                "kv_backend_errors",
                "Calls to the storage backend that raised (unavailable, timed out, failed), "
                "by backend and repository operation.",
                labels=("backend", "operation"),
            )
            for operation, series in sorted(snapshot["backend"].items()):
                labels = [metrics.backend, operation]
                calls.add_metric(labels, _buckets(series), series.total)
                errors.add_metric(labels, series.errors)
            yield calls
            yield errors
        if metrics._keys is not None:
            yield GaugeMetricFamily(
                "kv_memory_keys", "Keys stored in the memory backend.", value=len(metrics._keys)
            )


def _buckets(series: Series) -> list[tuple[str, float]]:
    """Cumulative (upper bound, count) pairs, +Inf last, as HistogramMetricFamily takes them."""
    cumulative = 0
    pairs: list[tuple[str, float]] = []
    for bound, count in zip((*series.bounds, float("inf")), series.counts, strict=True):
        cumulative += count
        pairs.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    return pairs


class InstrumentedRepository:
    """A repository that times every call to `inner` and counts the calls that raise.

    Cancellation (a client gone, a timeout above) is timed but not counted as an error.
    """

    def __init__(self, inner: Repository, calls: dict[str, Series]) -> None:
        self.inner = inner
        self._calls = calls

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        series = self._calls[operation]
        started = perf_counter()
        try:
            return await call
        except Exception:
            series.errors += 1
            raise
        finally:
            series.add(perf_counter() - started)

    def get(self, key: Key) -> Coroutine[Any, Any, Record | None]:
        return self._timed("get", self.inner.get(key))

    def create(
        self, key: Key, value: str, *, ttl_ms: int | None = None
    ) -> Coroutine[Any, Any, Record | None]:
        return self._timed("create", self.inner.create(key, value, ttl_ms=ttl_ms))

    def replace(
        self, key: Key, value: str, *, if_revision: int | None = None, ttl_ms: int | None = None
    ) -> Coroutine[Any, Any, Record | Stale | None]:
        call = self.inner.replace(key, value, if_revision=if_revision, ttl_ms=ttl_ms)
        return self._timed("replace", call)

    def upsert(
        self, key: Key, value: str, *, ttl_ms: int | None = None
    ) -> Coroutine[Any, Any, Record]:
        return self._timed("upsert", self.inner.upsert(key, value, ttl_ms=ttl_ms))

    def delete(
        self, key: Key, *, if_revision: int | None = None
    ) -> Coroutine[Any, Any, int | Stale | None]:
        return self._timed("delete", self.inner.delete(key, if_revision=if_revision))

    def list(
        self, prefix: str, *, after: str | None, limit: int, values: bool
    ) -> Coroutine[Any, Any, Page]:
        call = self.inner.list(prefix, after=after, limit=limit, values=values)
        return self._timed("list", call)

    def transact(
        self, operations: Sequence[txn.Op]
    ) -> Coroutine[Any, Any, Sequence[txn.Result] | txn.Abort]:
        return self._timed("transact", self.inner.transact(operations))

    def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        """The feed is one long subscription, not a call: passed through untimed."""
        return self.inner.changes()

    def clear(self) -> Coroutine[Any, Any, None]:
        return self._timed("clear", self.inner.clear())

    def ping(self) -> Coroutine[Any, Any, None]:
        return self._timed("ping", self.inner.ping())
