"""The processes a benchmark runs: the backend server, `kv serve` and the two floors, each
pinned to its CPU, and the GC snapshots of kv (bench/gc_probe.py)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from workloads import HOT_KEYS, VALUE

ROOT = Path(__file__).resolve().parent.parent
APP_CPU = "0"  # kv and the floors (one worker)
LOAD_CPU = "1"  # wrk, the paced client, the watchers and the backend server
# The floors, as bench/floor.py (Starlette) and bench/floor_asgi.py (no framework).
FLOORS = {"floor": "floor:app", "raw": "floor_asgi:app"}


@dataclass
class Server:
    app: str  # "kv", "floor" or "raw"
    url: str
    port: int
    process: subprocess.Popen[bytes]
    gc_stats: Path | None  # kv under bench/gc_probe.py writes its snapshots here


@dataclass
class Backend:
    name: str
    settings: dict[str, str]  # the KV_* variables that point kv at it
    pid: int | None  # None for memory (it is kv's own process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_times() -> tuple[int, int]:
    """(all, stolen) CPU time of the machine so far, in jiffies (/proc/stat): the share stolen
    is the time the hypervisor ran something else while this VM's CPUs had work."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]  # user .. steal; guest time is inside user


def stolen_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the CPU time between two cpu_times() that the hypervisor took."""
    total = after[0] - before[0]
    return (after[1] - before[1]) / total if total else 0.0


def cpus_of(pid: int) -> str:
    """The CPUs a process may run on, as `taskset -cp` reports them (e.g. "0", "0,1")."""
    output = subprocess.run(
        ["taskset", "-cp", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    return output.rsplit(":", 1)[1].strip()


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def backend_server(backend: str, workdir: Path) -> Iterator[Backend]:
    """Start the backend server on LOAD_CPU (nothing for memory)."""
    if backend == "memory":
        yield Backend(backend, {"KV_BACKEND": "memory"}, None)
        return
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix=backend, dir=workdir))
    log = (workdir / f"{backend}.log").open("wb")
    if backend == "tarantool":
        env = {
            **os.environ,
            "KV_TARANTOOL_LISTEN": f"127.0.0.1:{port}",
            "KV_TARANTOOL_WORK_DIR": str(data),
        }
        command = ["tarantool", str(ROOT / "deploy/tarantool/init.lua")]
        settings = {"KV_BACKEND": "tarantool", "KV_TARANTOOL_URL": f"kv:kv@127.0.0.1:{port}"}
    else:
        env = dict(os.environ)
        command = [
            "redis-server", str(ROOT / "deploy/redis/redis.conf"), "--port", str(port),
            "--dir", str(data), "--bind", "127.0.0.1", "--daemonize", "no",
        ]  # fmt: skip
        settings = {"KV_BACKEND": "redis", "KV_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    process = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, *command], env=env, cwd=data, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, process, backend)
        time.sleep(0.5)  # the instance file may still be creating the space
        yield Backend(backend, settings, process.pid)
    finally:
        stop(process)


@contextlib.contextmanager
def serve(
    app: str, backend: Backend, workdir: Path, *, workers: int = 1, gc_probe: bool = False
) -> Iterator[Server]:
    """Run `kv serve` (app="kv") or a floor on APP_CPU (both CPUs with workers > 1), with
    kv's bench key and hot keys created. kv runs under bench/gc_probe.py when `gc_probe`."""
    port = free_port()
    cpus = APP_CPU if workers == 1 else f"{APP_CPU},{LOAD_CPU}"
    gc_stats = None
    if app == "kv":
        env = {
            **os.environ,
            **backend.settings,
            "KV_PORT": str(port),
            "KV_WORKERS": str(workers),
            "KV_LOG_FILE": str(workdir / "kv-ops.log"),
        }
        command = [sys.executable, "-m", "kv.entrypoints.cli", "serve"]
        if gc_probe:
            gc_stats = workdir / f"gc-{port}.json"
            env["BENCH_GC_STATS"] = str(gc_stats)
            command = [sys.executable, str(ROOT / "bench" / "gc_probe.py"), "serve"]
    else:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
        command = [
            sys.executable, "-m", "uvicorn", FLOORS[app], "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--workers", str(workers),
        ]  # fmt: skip
    log = (workdir / f"{app}.stderr").open("ab")
    process = subprocess.Popen(
        ["taskset", "-c", cpus, *command], env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/kv/x", process, app)
        with httpx.Client(base_url=url, timeout=10) as client:
            for key in ["bench", *(f"hot{i}" for i in range(HOT_KEYS))]:
                answer = client.post("/kv", content=f'{{"key":"{key}","value":{VALUE}}}')
                if answer.status_code not in (200, 409):  # 409: a persistent backend has it
                    raise RuntimeError(
                        f"{app} on {backend.name} could not create a key: "
                        f"{answer.status_code} {answer.text[:200]}"
                    )
        yield Server(app, url, port, process, gc_stats)
    finally:
        stop(process)


def gc_snapshot(server: Server) -> dict[str, Any]:
    """kv's GC counters now (bench/gc_probe.py writes them on SIGUSR1)."""
    assert server.gc_stats is not None
    previous = _read_snapshot(server.gc_stats)
    seen = previous["snapshot"] if previous else 0
    server.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        snapshot = _read_snapshot(server.gc_stats)
        if snapshot and snapshot["snapshot"] > seen:
            return snapshot
        time.sleep(0.01)
    raise RuntimeError("kv did not write its GC snapshot (is it running under gc_probe.py?)")


def _read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
