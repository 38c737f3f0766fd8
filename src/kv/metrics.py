"""Prometheus metrics: HTTP requests, backend calls and the memory backend's size.

Cheap on the hot path by construction: the labelled children are looked up once per
(route, method, status) and cached in a dict (prometheus-client's `labels()` costs more
than a request's whole metrics budget), the request is recorded by the existing
`RequestContextMiddleware` rather than by a middleware of its own, and backend calls are
timed by a thin wrapper that the app puts around the repository only when metrics are on.

Several worker processes (`KV_WORKERS` > 1): prometheus-client's multiprocess mode. When
`PROMETHEUS_MULTIPROC_DIR` names a directory at the time prometheus-client is imported,
every process writes its values to files there and `/metrics` adds up the files of all of
them. `kv serve --workers N` creates (and removes) such a directory when none is given.
"""

import os
import re
from collections.abc import Iterable, Sized
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from kv.domain.model import Conflict, Record
from kv.domain.ports import Repository

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. A memory request takes ~0.1 ms, a networked backend ~1 ms, a timeout 2 s.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BACKEND_BUCKETS = (0.0001, 0.00025, *REQUEST_BUCKETS)

# Methods outside this set share one label value, so a client cannot grow the series.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
)
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "unmatched"

_CONVERTOR = re.compile(r"\{(\w+):\w+\}")

BACKEND_OPERATIONS = ("get", "create", "replace", "upsert", "delete", "clear", "ping")


def multiprocess_mode() -> bool:
    """Whether prometheus-client chose its multiprocess value class when it was imported
    (it reads `PROMETHEUS_MULTIPROC_DIR` then, and only then)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


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
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._keys: KeyCountCollector | None = None

    # --- HTTP ----------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request to the route whose template is `route`.

        The labelled children are cached per (route, method, status): `labels()` is slow.
        """
        children = self._http.get((route, method, status))
        if children is None:
            children = self._children(route, method, status)
        children[0].inc()
        children[1].observe(seconds)

    def _children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD  # cached under "other" too, so the cache stays small
            cached = self._http.get((route, method, status))
            if cached is not None:
                return cached
        template = strip_convertors(route)
        children = (
            self.requests.labels(template, method, str(status)),
            self.request_seconds.labels(template, method),
        )
        self._http[(route, method, status)] = children
        return children

    # --- the backend ---------------------------------------------------------------------

    def instrument(self, repository: Repository) -> "InstrumentedRepository":
        return InstrumentedRepository(repository, self)

    def count_keys(self, repository: Sized) -> None:
        """Publish `len(repository)` as `kv_memory_keys`, read at each scrape (so free)."""
        self.stop_counting_keys()
        self._keys = KeyCountCollector(repository)
        self.registry.register(self._keys)

    def stop_counting_keys(self) -> None:
        if self._keys is not None:
            self.registry.unregister(self._keys)
            self._keys = None

    # --- exposition ----------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape, in the format the `Accept` header asks for."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class KeyCountCollector(Collector):
    def __init__(self, repository: Sized) -> None:
        self.repository = repository

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "kv_memory_keys", "Keys stored in the memory backend.", value=len(self.repository)
        )


class InstrumentedRepository:
    """A repository that times every call to `inner` and counts the calls that raise.

    Cancellation (a client gone, a timeout above) is timed but not counted as an error.
    """

    def __init__(self, inner: Repository, metrics: Metrics) -> None:
        self.inner = inner
        backend = metrics.backend
        self._seconds = {
            op: metrics.backend_seconds.labels(backend, op) for op in BACKEND_OPERATIONS
        }
        self._errors = {op: metrics.backend_errors.labels(backend, op) for op in BACKEND_OPERATIONS}

    def __getattr__(self, name: str) -> Any:
        # Anything the port grows later still reaches the backend, untimed until listed here.
        return getattr(self.inner, name)

    async def get(self, key: str) -> Record | None:
        started = perf_counter()
        try:
            return await self.inner.get(key)
        except Exception:
            self._errors["get"].inc()
            raise
        finally:
            self._seconds["get"].observe(perf_counter() - started)

    async def create(self, key: str, value: str) -> Record | None:
        started = perf_counter()
        try:
            return await self.inner.create(key, value)
        except Exception:
            self._errors["create"].inc()
            raise
        finally:
            self._seconds["create"].observe(perf_counter() - started)

    async def replace(
        self, key: str, value: str, *, expected_revision: int | None = None
    ) -> Record | Conflict | None:
        started = perf_counter()
        try:
            return await self.inner.replace(key, value, expected_revision=expected_revision)
        except Exception:
            self._errors["replace"].inc()
            raise
        finally:
            self._seconds["replace"].observe(perf_counter() - started)

    async def upsert(self, key: str, value: str) -> Record:
        started = perf_counter()
        try:
            return await self.inner.upsert(key, value)
        except Exception:
            self._errors["upsert"].inc()
            raise
        finally:
            self._seconds["upsert"].observe(perf_counter() - started)

    async def delete(
        self, key: str, *, expected_revision: int | None = None
    ) -> int | Conflict | None:
        started = perf_counter()
        try:
            return await self.inner.delete(key, expected_revision=expected_revision)
        except Exception:
            self._errors["delete"].inc()
            raise
        finally:
            self._seconds["delete"].observe(perf_counter() - started)

    async def clear(self) -> None:
        started = perf_counter()
        try:
            await self.inner.clear()
        except Exception:
            self._errors["clear"].inc()
            raise
        finally:
            self._seconds["clear"].observe(perf_counter() - started)

    async def ping(self) -> None:
        started = perf_counter()
        try:
            await self.inner.ping()
        except Exception:
            self._errors["ping"].inc()
            raise
        finally:
            self._seconds["ping"].observe(perf_counter() - started)


def strip_convertors(path: str) -> str:
    """`/kv/{key:anypath}` -> `/kv/{key}`: a route's template as OpenAPI and people write it."""
    return _CONVERTOR.sub(r"{\1}", path)
