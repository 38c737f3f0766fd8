"""The connection limits as settings, and `kv serve` handing them to uvicorn.

Their effect on a real server is in tests/integration/test_limits.py."""

import os
import pickle
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from kv.container import ConfigError, Settings
from kv.entrypoints import cli, protocol
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
    assert protocol.missing_hooks(protocol.UVICORN_CLASSES) == []
    protocol.check_uvicorn(protocol.UVICORN_CLASSES, uvicorn.__version__)


def without(cls: type, member: str) -> type:
    """A copy of `cls` (same name) that lacks `member`, as another uvicorn might."""
    namespace = {name: value for name, value in vars(cls).items() if name != member}
    return type(cls.__name__, cls.__bases__, namespace)


def test_a_missing_hooked_method_stops_start_up_naming_it_and_the_version() -> None:
    classes = {
        **protocol.UVICORN_CLASSES,
        "HttpToolsProtocol": without(HttpToolsProtocol, "on_response_complete"),
    }
    with pytest.raises(protocol.UnsupportedUvicorn) as refused:
        protocol.check_uvicorn(classes, version="0.99.0")
    message = str(refused.value)
    assert "uvicorn 0.99.0 is installed" in message
    assert "HttpToolsProtocol.on_response_complete() is missing" in message
    assert f"Install uvicorn {protocol.PINNED_UVICORN}.x" in message


def test_a_hooked_method_of_another_shape_or_an_attribute_no_longer_set_is_named() -> None:
    class Cycle:  # a RequestResponseCycle that no longer has `disconnected`
        def __init__(self) -> None:
            self.response_started = self.response_complete = self.keep_alive = False
            self.more_body = True
            self.message_event = None

    class Protocol(HttpToolsProtocol):
        def on_message_complete(self, final: bool) -> None:  # type: ignore[override]
            pass

    classes = {
        **protocol.UVICORN_CLASSES,
        "HttpToolsProtocol": Protocol,
        "RequestResponseCycle": Cycle,
    }
    assert protocol.missing_hooks(classes) == [
        "HttpToolsProtocol.on_message_complete() takes (final), not ()",
        "RequestResponseCycle.disconnected is no longer set by RequestResponseCycle.__init__()",
    ]


def test_kv_serve_refuses_to_start_on_an_uvicorn_without_the_hooks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = {**protocol.UVICORN_CLASSES, "ServerState": without(ServerState, "__init__")}
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
