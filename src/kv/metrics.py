"""Prometheus metrics: HTTP requests, backend calls and the memory backend's size.

The hot path never calls prometheus-client. Updating a labelled prometheus-client child
costs about 1 µs (a lock and several calls per value), and a request would pay that three
or four times: measured through the app, ~8 µs per request, some 8% of the memory backend's
throughput. So a request adds its duration to a plain-Python histogram (`Series`: a sum and
bucket counts, found by one dict lookup on (route, method, status) and one `bisect`); this is
safe without locks because only the event loop's thread records. `publish()` then adds what
was recorded to the prometheus-client metrics: when /metrics is scraped and, with several
workers, every second. The request is recorded by the existing `RequestContextMiddleware`
(no middleware layer of its own), and backend calls by a thin wrapper around the repository
that the app adds only when metrics are on and the backend is reached over the network
(the memory backend's calls take less time than timing them: it publishes its size).

Several worker processes (`KV_WORKERS` > 1): prometheus-client's multiprocess mode. When
`PROMETHEUS_MULTIPROC_DIR` names a directory at the time prometheus-client is imported,
every process writes its values to files there and /metrics adds up the files of all of
them. `kv serve --workers N` creates (and removes) such a directory when none is given.
"""

import asyncio
import os
import re
from bisect import bisect_left
from collections.abc import AsyncGenerator, Awaitable, Coroutine, Iterable, Sequence, Sized
from time import perf_counter
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from kv.domain.model import Change, Key, Page, Record, Stale, TxnAbort, TxnOp, TxnResult
from kv.domain.ports import Repository

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
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

T = TypeVar("T")

_CONVERTOR = re.compile(r"\{(\w+):\w+\}")


def multiprocess_mode() -> bool:
    """Whether prometheus-client chose its multiprocess value class when it was imported
    (it reads `PROMETHEUS_MULTIPROC_DIR` then, and only then)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def strip_convertors(path: str) -> str:
    """`/kv/{key:anypath}` -> `/kv/{key}`: a route's template as OpenAPI and people write it."""
    return _CONVERTOR.sub(r"{\1}", path)


class Series:
    """Durations recorded since the last publication: their sum and per-bucket counts, the
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

    def take(self) -> tuple[list[int], float, int]:
        """What was recorded, and start again from zero."""
        taken = self.counts, self.total, self.errors
        self.counts = [0] * len(self.counts)
        self.total = 0.0
        self.errors = 0
        return taken


class Metrics:
    """Every series of one app, in a registry of its own (so tests can build many apps)."""

    def __init__(self, *, backend: str) -> None:
        self.backend = backend
        self.registry = CollectorRegistry()
        self.multiprocess = multiprocess_mode()
        # In multiprocess mode the values live in files, read back by the collector below;
        # registering the in-process objects as well would count every value twice.
        owner = None if self.multiprocess else self.registry
        if self.multiprocess:
            path = os.environ.get(MULTIPROC_DIR_VARIABLE)
            MultiProcessCollector(self.registry, path=path)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "kv_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ("route", "method", "status"),
            registry=owner,
        )
        self.request_seconds = Histogram(
            "kv_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route and method.",
            ("route", "method"),
            buckets=REQUEST_BUCKETS,
            registry=owner,
        )
        self.backend_seconds = Histogram(
            "kv_backend_call_duration_seconds",
            "Duration of calls to the storage backend, by backend and repository operation.",
            ("backend", "operation"),
            buckets=BACKEND_BUCKETS,
            registry=owner,
        )
        self.backend_errors = Counter(
            "kv_backend_errors",
            "Calls to the storage backend that raised (unavailable, timed out, failed), by "
            "backend and repository operation.",
            ("backend", "operation"),
            registry=owner,
        )
        # (route path, method, status) -> its series and the children it is published to.
        self._http: dict[tuple[str, str, int], tuple[Series, Any, Any]] = {}
        # operation -> its series and children; filled by `instrument`.
        self._backend: dict[str, tuple[Series, Any, Any]] = {}
        self._keys: KeyCountCollector | None = None

    # --- recording (the hot path) --------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request to the route whose path template is `route`."""
        entry = self._http.get((route, method, status))
        if entry is None:
            entry = self._new_request_series(route, method, status)
        series = entry[0]  # Series.add, inlined: this runs for every request
        series.total += seconds
        series.counts[bisect_left(REQUEST_BUCKETS, seconds)] += 1

    def _new_request_series(self, route: str, method: str, status: int) -> tuple[Series, Any, Any]:
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD  # one series for every unknown method, so few entries
            entry = self._http.get((route, method, status))
            if entry is not None:
                return entry
        template = strip_convertors(route)
        entry = (
            Series(REQUEST_BUCKETS),
            self.requests.labels(template, method, str(status)),
            self.request_seconds.labels(template, method),
        )
        self._http[(route, method, status)] = entry
        return entry

    def instrument(self, repository: Repository) -> "InstrumentedRepository":
        """`repository`, its calls timed and their errors counted under this app's backend."""
        if not self._backend:
            self._backend = {
                op: (
                    Series(BACKEND_BUCKETS),
                    self.backend_seconds.labels(self.backend, op),
                    self.backend_errors.labels(self.backend, op),
                )
                for op in BACKEND_OPERATIONS
            }
        return InstrumentedRepository(repository, {op: e[0] for op, e in self._backend.items()})

    def count_keys(self, repository: Sized) -> None:
        """Publish `len(repository)` as `kv_memory_keys`, read at each scrape (so free)."""
        self.stop_counting_keys()
        self._keys = KeyCountCollector(repository)
        self.registry.register(self._keys)

    def stop_counting_keys(self) -> None:
        if self._keys is not None:
            self.registry.unregister(self._keys)
            self._keys = None

    # --- publishing ----------------------------------------------------------------------

    def publish(self) -> None:
        """Add what was recorded since the last call to the prometheus-client metrics."""
        for series, requests, durations in self._http.values():
            counts, total, _ = series.take()
            if total or any(counts):
                requests.inc(sum(counts))
                _add_to_histogram(durations, counts, total)
        for series, seconds, failures in self._backend.values():
            counts, total, errors = series.take()
            if total or any(counts):
                _add_to_histogram(seconds, counts, total)
            if errors:
                failures.inc(errors)

    async def run(self, interval: float = PUBLISH_SECONDS) -> None:
        """With several workers, publish every `interval` seconds so that a scrape answered
        by another worker includes this one's requests; the owner publishes once more at exit.
        (A single process publishes when it is scraped, which is enough.)"""
        while self.multiprocess:
            await asyncio.sleep(interval)
            self.publish()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape, in the format the `Accept` header asks for."""
        self.publish()
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


def _add_to_histogram(histogram: Any, counts: list[int], total: float) -> None:
    """Add bucket counts and a sum to a prometheus-client histogram child in one step.

    Its public API takes one observation at a time, so this uses the two attributes every
    version since 0.1 has (`_sum`, `_buckets`: one value per bucket, +Inf last), which also
    work in multiprocess mode. tests/unit/test_metrics.py checks the result of both modes.
    """
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


class KeyCountCollector(Collector):
    def __init__(self, repository: Sized) -> None:
        self.repository = repository

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "kv_memory_keys", "Keys stored in the memory backend.", value=len(self.repository)
        )


class InstrumentedRepository:
    """A repository that times every call to `inner` and counts the calls that raise.

    Cancellation (a client gone, a timeout above) is timed but not counted as an error. The
    change feed is passed through untimed: it is one long-lived subscription, not a call.
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
        self,
        key: Key,
        value: str,
        *,
        expected_revision: int | None = None,
        ttl_ms: int | None = None,
    ) -> Coroutine[Any, Any, Record | Stale | None]:
        call = self.inner.replace(key, value, expected_revision=expected_revision, ttl_ms=ttl_ms)
        return self._timed("replace", call)

    def upsert(
        self, key: Key, value: str, *, ttl_ms: int | None = None
    ) -> Coroutine[Any, Any, Record]:
        return self._timed("upsert", self.inner.upsert(key, value, ttl_ms=ttl_ms))

    def delete(
        self, key: Key, *, expected_revision: int | None = None
    ) -> Coroutine[Any, Any, int | Stale | None]:
        return self._timed("delete", self.inner.delete(key, expected_revision=expected_revision))

    def list(
        self, prefix: str, *, after: str | None, limit: int, values: bool
    ) -> Coroutine[Any, Any, Page]:
        call = self.inner.list(prefix, after=after, limit=limit, values=values)
        return self._timed("list", call)

    def transact(
        self, operations: Sequence[TxnOp]
    ) -> Coroutine[Any, Any, Sequence[TxnResult] | TxnAbort]:
        return self._timed("transact", self.inner.transact(operations))

    def changes(self) -> AsyncGenerator[Sequence[Change], None]:
        return self.inner.changes()

    def clear(self) -> Coroutine[Any, Any, None]:
        return self._timed("clear", self.inner.clear())

    def ping(self) -> Coroutine[Any, Any, None]:
        return self._timed("ping", self.inner.ping())
