"""A watch outlives its server: `kv serve` is killed (SIGKILL) mid-watch and started again on
the same port, and the caller, applying the events it gets, ends up with exactly what the
store holds, told on the way what happened.

On memory the restarted server has lost every key: the resync deletes them. On a shared
backend (Tarantool, Redis) the data outlives kv, and a second `kv serve` changes it while the
watched one is down: the resync hands out exactly those changes.
"""

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from kv.client import DeleteEvent, Interrupted, PutEvent, Record, Synced, WatchEvent
from tests.client_driver import KINDS, Driver
from tests.integration.conftest import CLIENT_BACKENDS, serve_env
from tests.integration.test_serve import Server, free_port, start_kv, stop_kv


def apply(view: dict[str, Record], event: WatchEvent) -> None:
    """What a caller mirroring the prefix does with an event."""
    if isinstance(event, PutEvent):
        view[event.key] = event.record
    elif isinstance(event, DeleteEvent):
        view.pop(event.key, None)


def kill(server: Server) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)


@pytest.fixture(params=CLIENT_BACKENDS)
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    backend: str = request.param
    settings = (
        {} if backend == "memory" else request.getfixturevalue(f"{backend}_server").settings()
    )
    return {
        "KV_BACKEND": backend.partition("_")[0],
        "KV_LOG_LEVEL": "WARNING",
        **serve_env(settings),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_watch_resumes_after_a_restart_and_misses_nothing(
    tmp_path: Path, env: dict[str, str], kind: str
) -> None:
    memory = env["KV_BACKEND"] == "memory"
    port = free_port()
    watched = start_kv(tmp_path, env, port=port)
    # Who writes while the watched server is down: nobody on memory, a second kv otherwise.
    other = None if memory else start_kv(tmp_path / "other", env)
    prefix = f"restart-{uuid.uuid4().hex[:8]}/"
    k = [prefix + name for name in ("one", "two", "thr ee", "four/é")]
    seen: list[WatchEvent] = []
    mirror: dict[str, Record] = {}
    try:
        with Driver(kind, watched.url) as watcher, Driver("sync", watched.url) as writer:
            events = watcher.watch(prefix, give_up_after=60)

            def take(count: int) -> list[WatchEvent]:
                taken = events.take(count)
                for event in taken:
                    apply(mirror, event)
                seen.extend(taken)
                return taken

            assert take(1) == [Synced("start", 0, 0)]
            writer.call("create", k[0], "first")
            writer.call("create", k[1], "second")
            writer.call("create", k[2], "third")
            writer.call("put", k[0], "first, again")
            assert [type(event) for event in take(4)] == [PutEvent] * 4

            kill(watched)
            [lost] = take(1)
            assert isinstance(lost, Interrupted) and lost.cause == "disconnected"

            if other is None:  # memory: the store restarts empty; write to the new one
                watched = start_kv(tmp_path, env, port=port)
                writer.call("create", k[0], "after the restart")
                writer.call("create", k[3], "new")
            else:  # the changes the watcher cannot see happen through the other server
                with Driver("sync", other.url) as elsewhere:
                    elsewhere.call("delete", k[1])
                    elsewhere.call("put", k[2], "changed while down")
                    elsewhere.call("create", k[3], "new")
                watched = start_kv(tmp_path, env, port=port)

            resync: list[WatchEvent] = []
            while not isinstance(event := take(1)[0], Synced):
                resync.append(event)
            assert event.cause == "disconnected"
            assert all(getattr(e, "resync", False) for e in resync), resync
            writer.call("put", k[3], "live again")
            assert take(1) == [PutEvent(k[3], "live again", 2)]
            events.close()
            truth = {record.key: record for record in writer.list(prefix, values=True)}
    finally:
        for server in (watched, other):
            if server is not None and server.process.poll() is None:
                stop_kv(server)
    assert mirror == truth
    expected: dict[str, Any]
    if memory:
        expected = {k[0]: "after the restart", k[3]: "live again"}
        assert {e.key for e in resync if isinstance(e, DeleteEvent)} == {k[1], k[2]}
    else:
        expected = {k[0]: "first, again", k[2]: "changed while down", k[3]: "live again"}
        assert [e.key for e in resync if isinstance(e, DeleteEvent)] == [k[1]]
    assert {key: record.value for key, record in mirror.items()} == expected


def test_a_stopping_server_ends_its_watch_streams_with_unavailable(tmp_path: Path) -> None:
    server = start_kv(tmp_path, {"KV_BACKEND": "memory", "KV_LOG_LEVEL": "WARNING"})
    try:
        with Driver("sync", server.url) as client:
            events = client.watch("", initial=False)
            assert events.next() == Synced("start", 0, 0)
            server.process.send_signal(signal.SIGTERM)
            lost = events.next()
            events.close()
    finally:
        if server.process.poll() is None:
            stop_kv(server)
    assert isinstance(lost, Interrupted)
    assert lost.cause == "unavailable", lost.detail
