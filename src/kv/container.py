"""The composition root: settings read once from the environment, the backend chosen by
`KV_BACKEND`, and the service built on it."""

import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Mapping, Sized
from dataclasses import dataclass
from typing import Any

from dependency_injector import containers, providers

from kv.adapters.memory import open_memory_repository
from kv.adapters.redis import open_redis_repository
from kv.adapters.tarantool import TarantoolAddress, open_tarantool_repository
from kv.domain.ports import Repository
from kv.domain.service import KVService
from kv.domain.watch import WatchHub
from kv.metrics import Metrics

BACKENDS = ("memory", "tarantool", "redis")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
# A connection timeout of hours is a typo for one of seconds; and a request head must at
# least hold a request line and a few headers.
MAX_TIMEOUT_SECONDS = 3600
MIN_HEADER_BYTES = 1024


class ConfigError(ValueError):
    """A setting has a value the service cannot run with; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of CONTRACT.md, with its default."""

    backend: str = "memory"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    tarantool_url: str = "127.0.0.1:3301"
    tarantool_space: str = "kv"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "kv:"
    redis_cluster: bool = False
    backend_timeout: float = 2.0
    max_body_bytes: int = 1048576
    log_level: str = "INFO"
    log_format: str = "text"
    log_file: str | None = None
    enable_reset: bool = False
    auth_token: str | None = None
    metrics: bool = True
    metrics_dir: str | None = None  # where several workers share their metrics
    max_watchers: int = 1000
    # Connection limits, applied by `kv serve` (see kv.entrypoints.protocol).
    keep_alive_seconds: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 65536
    limit_concurrency: int = 1000
    backlog: int = 2048

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"KV_BACKEND={self.backend!r} is not a backend; valid ones: {', '.join(BACKENDS)}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"KV_LOG_FORMAT={self.log_format!r} is not valid; "
                f"use one of: {', '.join(LOG_FORMATS)}"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"KV_LOG_LEVEL={self.log_level!r} is not valid; use one of: {', '.join(LOG_LEVELS)}"
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"KV_PORT={self.port} is not a TCP port (1-65535)")
        if self.workers < 1:
            raise ConfigError(f"KV_WORKERS={self.workers} must be at least 1")
        if self.workers > 1 and self.backend == "memory":
            raise ConfigError(
                "the memory backend lives in one process: KV_WORKERS must be 1 with it "
                "(use tarantool or redis to run several workers)"
            )
        if not self.backend_timeout > 0:
            raise ConfigError(f"KV_BACKEND_TIMEOUT={self.backend_timeout} must be above 0")
        if self.max_body_bytes < 1:
            raise ConfigError(f"KV_MAX_BODY_BYTES={self.max_body_bytes} must be at least 1")
        for name in ("keep_alive_seconds", "header_timeout", "body_timeout"):
            seconds = getattr(self, name)
            if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
                raise ConfigError(
                    f"KV_{name.upper()}={seconds} must be above 0 and at most "
                    f"{MAX_TIMEOUT_SECONDS} seconds"
                )
        if self.max_header_bytes < MIN_HEADER_BYTES:
            raise ConfigError(
                f"KV_MAX_HEADER_BYTES={self.max_header_bytes} must be at least {MIN_HEADER_BYTES}"
            )
        if self.limit_concurrency < 1:
            raise ConfigError(f"KV_LIMIT_CONCURRENCY={self.limit_concurrency} must be at least 1")
        if self.backlog < 1:
            raise ConfigError(f"KV_BACKLOG={self.backlog} must be at least 1")
        if self.max_watchers < 0:
            raise ConfigError(f"KV_MAX_WATCHERS={self.max_watchers} must be at least 0")
        if self.backend == "tarantool":
            try:
                TarantoolAddress.parse(self.tarantool_url)
            except ValueError as exc:
                # Not echoing the URL: it may hold a password.
                raise ConfigError(f"KV_TARANTOOL_URL is not valid: {exc}") from None
            if not self.tarantool_space.isidentifier() or not self.tarantool_space.isascii():
                raise ConfigError(
                    f"KV_TARANTOOL_SPACE={self.tarantool_space!r} must be ASCII letters, digits "
                    "and _, not starting with a digit (it prefixes the names of kv's functions)"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "Settings":
        """Settings from `KV_*` variables; `overrides` (CLI flags) win over the environment."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(f"KV_{field.name.upper()}")
            if raw is None or (raw == "" and field.default is None):
                continue
            values[field.name] = _parse(field.name, field.type, raw.strip())
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _parse(name: str, kind: object, raw: str) -> Any:
    variable = f"KV_{name.upper()}"
    if kind in ("bool", bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{variable}={raw!r} is not a boolean (true or false)")
    if kind in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not a whole number") from None
    if kind in ("float", float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not a number of seconds") from None
    if name in ("log_level",):
        return raw.upper()
    if name in ("backend", "log_format"):
        return raw.lower()
    return raw


async def measured(
    store: Repository, metrics: Metrics, enabled: bool, backend: str
) -> AsyncIterator[Repository]:
    """The Resource of the repository the service uses: `store`, measured when metrics are on.

    A backend over the network has its calls timed. The memory backend's calls are dict
    operations in this process (~0.2 µs): timing them costs more than they take (~1.4 µs a
    request, measured) and says nothing, so memory publishes its number of keys instead.
    """
    if not enabled:
        yield store
    elif backend == "memory" and isinstance(store, Sized):
        metrics.count_keys(store)
        try:
            yield store
        finally:
            metrics.stop_counting_keys()
    else:
        yield metrics.instrument(store)


async def open_watch_hub(
    repository: Repository,
    max_watchers: int,
    timeout: float,  # noqa: ASYNC109 (how long a watcher waits for the feed to subscribe)
    backend: str,
) -> AsyncIterator[WatchHub]:
    """The Resource of the watch hub: every watcher is ended when the service stops."""
    hub = WatchHub(repository, max_watchers=max_watchers, timeout=timeout, backend=backend)
    try:
        yield hub
    finally:
        await hub.aclose()


class Container(containers.DeclarativeContainer):
    """Wires the chosen backend, measured, into the service.

    Only the selected Resource is started, by resolving `service` (never `init_resources()`,
    which would open every branch of the Selector); `shutdown_resources()` closes it.
    """

    config = providers.Configuration()

    metrics = providers.Singleton(Metrics, backend=config.backend, directory=config.metrics_dir)

    store = providers.Selector(
        config.backend,
        memory=providers.Resource(open_memory_repository),
        tarantool=providers.Resource(
            open_tarantool_repository,
            url=config.tarantool_url,
            space=config.tarantool_space,
            timeout=config.backend_timeout,
        ),
        redis=providers.Resource(
            open_redis_repository,
            url=config.redis_url,
            prefix=config.redis_prefix,
            cluster=config.redis_cluster,
            timeout=config.backend_timeout,
            max_connections=config.limit_concurrency,
        ),
    )

    repository = providers.Resource(
        measured,
        store=store,
        metrics=metrics,
        enabled=config.metrics,
        backend=config.backend,
    )

    watches = providers.Resource(
        open_watch_hub,
        repository=repository,
        max_watchers=config.max_watchers,
        timeout=config.backend_timeout,
        backend=config.backend,
    )

    service = providers.Singleton(KVService, repository=repository, watches=watches)


async def start_service(container: Container) -> KVService:
    """Open the selected backend (only that one) and return the service built on it."""
    service: KVService | Awaitable[KVService] = container.service()
    # Async when the backend's Resource is async; an overridden provider may be plain.
    return await service if inspect.isawaitable(service) else service


async def stop_service(container: Container) -> None:
    """Close whatever `start_service` opened."""
    closing = container.shutdown_resources()
    if closing is not None:
        await closing


def build_container(settings: Settings) -> Container:
    container = Container()
    container.config.from_dict(dataclasses.asdict(settings))
    return container
