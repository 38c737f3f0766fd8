"""`kv serve`: run the service configured from the environment, flags overriding it.
`kv check URL`: run scenarios against a live server and report each step (see check.py).
`kv get|put|create|delete|list|watch|txn`: use a server (see client_commands.py)."""

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn

from kv.container import BACKENDS, ConfigError, Settings
from kv.entrypoints import client_commands
from kv.entrypoints.check import DEFAULT_TIMEOUT
from kv.entrypoints.check import main as run_check_command
from kv.entrypoints.protocol import UnsupportedUvicorn, protocol_factory

METRICS_DIR_VARIABLE = "KV_METRICS_DIR"

# On SIGTERM, requests in flight get this long to finish before their connections are closed.
GRACEFUL_SHUTDOWN_SECONDS = 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kv", description="kv: a key-value store over HTTP")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service (configured by KV_* variables)")
    serve.add_argument("--host", help="address to listen on (KV_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (KV_PORT, default 8000)")
    serve.add_argument(
        "--backend", help=f"one of {', '.join(BACKENDS)} (KV_BACKEND, default memory)"
    )
    serve.add_argument("--workers", type=int, help="worker processes (KV_WORKERS, default 1)")
    check = commands.add_parser(
        "check",
        help="run scenarios against a live server and report each step",
        description="Run scenarios against a live server under a random key prefix, cleaning "
        "up after. Exit 0 when every step passes, 1 when one fails, 2 when the server cannot "
        "be reached. Sends Authorization: Bearer $KV_AUTH_TOKEN when that variable is set.",
    )
    check.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    check.add_argument(
        "--json", action="store_true", help="print a machine-readable report instead of lines"
    )
    check.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each response (default {DEFAULT_TIMEOUT:g})",
    )
    client_commands.add_commands(commands)
    return parser


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return seconds


def serve(args: argparse.Namespace) -> int:
    overrides = {
        "host": args.host,
        "port": args.port,
        "backend": args.backend.lower() if args.backend else None,
        "workers": args.workers,
    }
    try:
        settings = Settings.from_env(os.environ, **overrides)
        # httptools, with the deadlines and limits uvicorn lacks (see protocol.py); this
        # checks first that the installed uvicorn has every member the protocol hooks.
        http = protocol_factory(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_header_bytes=settings.max_header_bytes,
            limit_concurrency=settings.limit_concurrency,
        )
    except (ConfigError, UnsupportedUvicorn) as exc:
        print(f"kv: {exc}", file=sys.stderr)
        return 2
    shared = settings.metrics_dir
    if settings.metrics and shared and not os.path.isdir(shared):
        print(f"kv: {METRICS_DIR_VARIABLE}={shared!r} is not a directory", file=sys.stderr)
        return 2
    from kv.entrypoints.http import create_app

    options = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": http,
        "ws": "none",  # no WebSocket routes: do not accept upgrades either
        "timeout_keep_alive": settings.keep_alive_seconds,
        "backlog": settings.backlog,
        "access_log": False,  # the operation log records every operation, batched
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings, freeze_heap=True), **options)  # type: ignore[arg-type]
    else:
        # Each worker process builds its own app from the environment: pass the flags on.
        for name, value in overrides.items():
            if value is not None:
                os.environ[f"KV_{name.upper()}"] = str(value)
        with shared_metrics_directory(settings.metrics):
            uvicorn.run("kv.entrypoints.http:app", workers=settings.workers, **options)  # type: ignore[arg-type]
    return 0


def check(args: argparse.Namespace) -> int:
    return run_check_command(
        args.url,
        token=os.environ.get("KV_AUTH_TOKEN") or None,
        timeout=args.timeout,
        as_json=args.json,
    )


@contextmanager
def shared_metrics_directory(enabled: bool) -> Iterator[str | None]:
    """Where the worker processes write their metrics so that /metrics adds them all up.

    `KV_METRICS_DIR` when the user gives one (it must be emptied between runs), else a new
    temporary directory, removed at exit. The workers inherit the variable.
    """
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if not enabled or given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="kv-metrics-") as directory:
        os.environ[METRICS_DIR_VARIABLE] = directory
        try:
            yield directory
        finally:
            del os.environ[METRICS_DIR_VARIABLE]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "check":
        return check(args)
    if args.command in client_commands.COMMANDS:
        return client_commands.run(args)
    return 2  # unreachable: argparse requires a known command


if __name__ == "__main__":
    sys.exit(main())
