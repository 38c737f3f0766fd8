"""The connection limits as settings, and `kv serve` handing them to uvicorn.

Their effect on a real server is in tests/integration/test_limits.py."""

import asyncio
import os
import pickle
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from kv.container import ConfigError, Settings
from kv.entrypoints import cli, protocol, uvicorn_hooks
from kv.entrypoints.protocol import GuardedHttpToolsProtocol


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.keep_alive_seconds == 5.0
    assert settings.header_timeout == 10.0
    assert settings.body_timeout == 30.0
    assert settings.max_header_bytes == 65536
    assert settings.limit_concurrency == 1000
    assert settings.backlog == 2048


def test_every_limit_is_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "KV_KEEP_ALIVE_SECONDS": "1.5",
            "KV_HEADER_TIMEOUT": "3",
            "KV_BODY_TIMEOUT": "4.5",
            "KV_MAX_HEADER_BYTES": "8192",
            "KV_LIMIT_CONCURRENCY": "50",
            "KV_BACKLOG": "128",
        }
    )
    assert (
        settings.keep_alive_seconds,
        settings.header_timeout,
        settings.body_timeout,
        settings.max_header_bytes,
        settings.limit_concurrency,
        settings.backlog,
    ) == (1.5, 3.0, 4.5, 8192, 50, 128)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KV_KEEP_ALIVE_SECONDS": "0"}, "KV_KEEP_ALIVE_SECONDS=0.0 must be above 0"),
        ({"KV_KEEP_ALIVE_SECONDS": "soon"}, "KV_KEEP_ALIVE_SECONDS='soon' is not a number"),
        ({"KV_HEADER_TIMEOUT": "-1"}, "KV_HEADER_TIMEOUT=-1.0 must be above 0"),
        ({"KV_HEADER_TIMEOUT": "nan"}, "KV_HEADER_TIMEOUT=nan must be above 0"),
        ({"KV_BODY_TIMEOUT": "inf"}, "at most 3600 seconds"),
        ({"KV_BODY_TIMEOUT": "86400"}, "at most 3600 seconds"),
        ({"KV_MAX_HEADER_BYTES": "100"}, "KV_MAX_HEADER_BYTES=100 must be at least 1024"),
        ({"KV_LIMIT_CONCURRENCY": "0"}, "KV_LIMIT_CONCURRENCY=0 must be at least 1"),
        ({"KV_LIMIT_CONCURRENCY": "many"}, "is not a whole number"),
        ({"KV_BACKLOG": "0"}, "KV_BACKLOG=0 must be at least 1"),
    ],
)
def test_bad_limits_stop_start_up_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Settings.from_env(environ)


def serve_options(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> dict[str, Any]:
    """What `kv serve` would pass to uvicorn.run in `environ`."""
    captured: dict[str, Any] = {}

    def fake_run(app: object, **options: Any) -> None:
        captured.update(options, app=app)

    for name in list(os.environ):
        if name.startswith("KV_"):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert cli.main(["serve"]) == 0
    return captured


def test_kv_serve_hands_the_limits_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    options = serve_options(
        monkeypatch,
        {
            "KV_KEEP_ALIVE_SECONDS": "7",
            "KV_HEADER_TIMEOUT": "3",
            "KV_BODY_TIMEOUT": "4",
            "KV_MAX_HEADER_BYTES": "4096",
            "KV_LIMIT_CONCURRENCY": "20",
            "KV_BACKLOG": "64",
        },
    )
    assert options["timeout_keep_alive"] == 7.0
    assert options["backlog"] == 64
    assert options["ws"] == "none"
    assert "limit_concurrency" not in options  # the protocol checks it (problem+json 503)
    factory = options["http"]
    assert factory.func is GuardedHttpToolsProtocol
    assert factory.keywords["header_timeout"] == 3.0
    assert factory.keywords["body_timeout"] == 4.0
    assert factory.keywords["max_header_bytes"] == 4096
    assert factory.keywords["overload"].limit == 20
    # uvicorn pickles its config into each worker process when KV_WORKERS > 1.
    copy = pickle.loads(pickle.dumps(factory))  # noqa: S301 (our own bytes)
    assert copy.keywords["header_timeout"] == 3.0


def test_kv_serve_defaults_bound_every_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    options = serve_options(monkeypatch, {})
    assert options["timeout_keep_alive"] == 5.0
    assert options["timeout_graceful_shutdown"] == 10
    keywords = options["http"].keywords
    assert (keywords["header_timeout"], keywords["body_timeout"]) == (10.0, 30.0)
    assert keywords["overload"].limit == 1000


def test_the_installed_uvicorn_has_every_hooked_member() -> None:
    assert uvicorn_hooks.missing_hooks(uvicorn_hooks.UVICORN_CLASSES) == []
    uvicorn_hooks.check_uvicorn(uvicorn_hooks.UVICORN_CLASSES, uvicorn.__version__)


def without(cls: type, member: str) -> type:
    """A copy of `cls` (same name) that lacks `member`, as another uvicorn might."""
    namespace = {name: value for name, value in vars(cls).items() if name != member}
    return type(cls.__name__, cls.__bases__, namespace)


def test_a_missing_hooked_method_stops_start_up_naming_it_and_the_version() -> None:
    classes = {
        **uvicorn_hooks.UVICORN_CLASSES,
        "HttpToolsProtocol": without(HttpToolsProtocol, "on_response_complete"),
    }
    with pytest.raises(uvicorn_hooks.UnsupportedUvicorn) as refused:
        uvicorn_hooks.check_uvicorn(classes, version="0.99.0")
    message = str(refused.value)
    assert "uvicorn 0.99.0 is installed" in message
    assert "HttpToolsProtocol.on_response_complete() is missing" in message
    assert f"Install uvicorn {uvicorn_hooks.PINNED_UVICORN}.x" in message


def test_a_hooked_method_of_another_shape_or_an_attribute_no_longer_set_is_named() -> None:
    class Cycle:  # a RequestResponseCycle that no longer has `disconnected`
        def __init__(self) -> None:
            self.response_started = self.response_complete = self.keep_alive = False
            self.more_body = True
            self.message_event = None
            self.scope: dict[str, object] = {}

    class Protocol(HttpToolsProtocol):
        def on_message_complete(self, final: bool) -> None:  # type: ignore[override]
            pass

    classes = {
        **uvicorn_hooks.UVICORN_CLASSES,
        "HttpToolsProtocol": Protocol,
        "RequestResponseCycle": Cycle,
    }
    assert uvicorn_hooks.missing_hooks(classes) == [
        "HttpToolsProtocol.on_message_complete() takes (final), not ()",
        "RequestResponseCycle.disconnected is no longer set by RequestResponseCycle.__init__()",
    ]


def test_kv_serve_refuses_to_start_on_an_uvicorn_without_the_hooks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = {**uvicorn_hooks.UVICORN_CLASSES, "ServerState": without(ServerState, "__init__")}
    monkeypatch.setattr(protocol, "UVICORN_CLASSES", classes)
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **_options: ran.append(args))
    assert cli.main(["serve"]) == 2
    assert ran == []
    error = capsys.readouterr().err
    assert error.startswith("kv: kv serve extends private members of uvicorn 0.54.x")
    assert "uvicorn 0.99.0 is installed" in error
    assert "ServerState.connections is no longer set by ServerState.__init__()" in error


def test_each_worker_process_generates_request_ids_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = serve_options(monkeypatch, {})["http"]
    ids = factory.keywords["ids"]
    assert factory.keywords["overload"].ids is ids  # one generator for the protocol's answers
    copy = pickle.loads(pickle.dumps(factory))  # noqa: S301 (our own bytes)
    assert copy.keywords["overload"].ids is copy.keywords["ids"]
    assert copy.keywords["ids"].prefix != ids.prefix


class Transport(asyncio.Transport):
    """Holds `buffered` bytes the client has not taken yet."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        pass


class Clock:
    """The loop's time and timers, as far as the send deadline uses them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[asyncio.TimerHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
        timer = asyncio.TimerHandle(when, callback, (), asyncio.get_running_loop())
        self.timers.append(timer)
        return timer

    def due(self) -> float | None:
        """When the armed send deadline fires, if one is armed."""
        armed = [timer for timer in self.timers if not timer.cancelled()]
        assert len(armed) <= 1
        return armed[0].when() if armed else None


async def test_the_send_deadline_adds_up_every_stall_until_the_client_catches_up() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = uvicorn.Config(app, log_config=None, lifespan="off")
    factory = protocol.protocol_factory(
        header_timeout=10, body_timeout=2, max_header_bytes=65536, limit_concurrency=10
    )
    connection = factory(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    connection.connection_made(transport)
    clock = Clock()
    connection.event_loop = clock  # type: ignore[assignment]
    try:
        transport.buffered = 5_000_000
        connection.pause_writing()  # the client stops taking what is sent
        assert clock.due() == 1002.0
        clock.now += 1.5
        transport.buffered = 10_000
        connection.resume_writing()  # it took some, not all: 0.5 s left
        assert clock.due() is None
        clock.now += 0.1
        transport.buffered = 5_000_000
        connection.pause_writing()
        assert clock.due() == pytest.approx(1002.1)  # not 1003.6: the stalls add up
        clock.now += 0.2
        transport.buffered = 0
        connection.resume_writing()  # it took everything: the deadline starts afresh
        connection.pause_writing()
        assert clock.due() == pytest.approx(1003.8)
        clock.timers[-1]._run()  # the deadline passes: the connection is dropped
        assert transport.aborted
    finally:
        connection.connection_lost(None)
