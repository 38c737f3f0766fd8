"""kv against the framework floor, side by side: `make bench`.

For each backend, alternating A/B rounds of wrk against `kv serve` and against the floor
(bench/floor.py: a bare Starlette app with kv's routes that stores nothing), both under the
same uvicorn settings (uvloop, httptools, no access log). The app under test is pinned to
CPU 0; wrk (one thread, 50 connections) and the backend server share CPU 1. The operation
log is on at its default level (INFO), written to a file.

Reports the median over rounds of requests/s, p50 and p99 latency, and kv/floor, as a
Markdown table and a PNG chart in bench/results/, and prints the table.

    .venv/bin/python bench/run.py [--backends memory tarantool redis] [--rounds 3]
                                  [--duration 5] [--workers 2]
"""

import argparse
import contextlib
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VALUE = '{"n":12345,"s":"some text"}'
CONNECTIONS = 50
TARGETS = {"memory": 0.95, "tarantool": 0.80, "redis": 0.60}
P99_TARGET_MS = 5.0

SCRIPTS = {
    "GET existing": None,
    "GET missing": None,
    "PUT overwrite": f"""
wrk.method = "PUT"
wrk.body = '{{"value": {VALUE}}}'
""",
    "POST new keys": f"""
counter = 0
prefix = tostring(os.time()) .. tostring(math.random(1, 1000000000))
request = function()
  counter = counter + 1
  local body = '{{"key":"new-' .. prefix .. '-' .. counter .. '","value":{VALUE}}}'
  return wrk.format("POST", "/kv", nil, body)
end
""",
    "90/10 read/write": f"""
counter = 0
request = function()
  counter = counter + 1
  local path = "/kv/hot" .. (counter % 100)
  if counter % 10 == 0 then
    return wrk.format("PUT", path, nil, '{{"value":{VALUE}}}')
  end
  return wrk.format("GET", path)
end
""",
}
PATHS = {"GET missing": "/kv/missing-key"}


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def backend_server(backend: str, workdir: Path) -> Iterator[dict[str, str]]:
    """Start the backend (on CPU 1) and yield the KV_* variables that point kv at it."""
    if backend == "memory":
        yield {"KV_BACKEND": "memory"}
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
            "redis-server",
            str(ROOT / "deploy/redis/redis.conf"),
            "--port",
            str(port),
            "--dir",
            str(data),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
        ]
        settings = {"KV_BACKEND": "redis", "KV_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    process = subprocess.Popen(
        ["taskset", "-c", "1", *command], env=env, cwd=data, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, process, backend)
        time.sleep(0.5)  # the instance file may still be creating the space
        yield settings
    finally:
        stop(process)


@contextlib.contextmanager
def serve(app: str, backend_env: dict[str, str], workdir: Path, workers: int) -> Iterator[str]:
    """Run kv (app="kv") or the floor (app="floor") on CPU 0 (both CPUs with workers > 1)."""
    port = free_port()
    cpus = "0" if workers == 1 else "0,1"
    if app == "kv":
        env = {
            **os.environ,
            **backend_env,
            "KV_PORT": str(port),
            "KV_WORKERS": str(workers),
            "KV_LOG_FILE": str(workdir / "kv-ops.log"),
        }
        command = [sys.executable, "-m", "kv.entrypoints.cli", "serve"]
    else:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "floor:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ]
    log = (workdir / f"{app}.stderr").open("ab")
    process = subprocess.Popen(
        ["taskset", "-c", cpus, *command], env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/kv/x", process, app)
        with httpx.Client(base_url=url, timeout=10) as client:
            for key in ["bench", *(f"hot{i}" for i in range(100))]:
                client.post("/kv", content=f'{{"key":"{key}","value":{VALUE}}}')
        yield url
    finally:
        stop(process)


def to_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, workload: str, duration: int, workdir: Path) -> Sample:
    command = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{duration}s",
        "--latency",
        url + PATHS.get(workload, "/kv/bench"),
    ]
    script = SCRIPTS[workload]
    if script:
        path = workdir / (re.sub(r"\W+", "_", workload) + ".lua")
        path.write_text(script)
        command[4:4] = ["-s", str(path)]  # after "wrk"
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    if errors:
        print(f"    wrk: {errors.group(0)}", flush=True)
    return Sample(rps, p50, p99, int(bad.group(1)) if bad else 0)


def median(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
        max(s.errors for s in samples),
    )


def bench_backend(
    backend: str, args: argparse.Namespace, workdir: Path, workers: int
) -> dict[str, dict[str, Sample]]:
    samples: dict[str, dict[str, list[Sample]]] = {"kv": {}, "floor": {}}
    with backend_server(backend, workdir) as backend_env:
        for round_ in range(args.rounds):
            order = ("kv", "floor") if round_ % 2 == 0 else ("floor", "kv")
            for app in order:
                with serve(app, backend_env, workdir, workers) as url:
                    for workload in SCRIPTS:
                        sample = wrk(url, workload, args.duration, workdir)
                        samples[app].setdefault(workload, []).append(sample)
                        print(
                            f"  {backend} x{workers} round {round_} {app:5} {workload:16} "
                            f"{sample.rps:9,.0f} req/s  p50 {sample.p50_ms:6.2f} ms  "
                            f"p99 {sample.p99_ms:6.2f} ms",
                            flush=True,
                        )
    return {app: {w: median(s) for w, s in by.items()} for app, by in samples.items()}


def table(results: dict[tuple[str, int], dict[str, dict[str, Sample]]]) -> str:
    lines = [
        "| backend | workers | workload | kv req/s | floor req/s | kv/floor | target "
        "| kv p50 ms | kv p99 ms | floor p99 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (backend, workers), by_app in results.items():
        for workload, kv in by_app["kv"].items():
            floor = by_app["floor"][workload]
            ratio = kv.rps / floor.rps
            target = TARGETS[backend]
            mark = "" if workers > 1 else (" ✅" if ratio >= target else " ❌")
            lines.append(
                f"| {backend} | {workers} | {workload} | {kv.rps:,.0f} | {floor.rps:,.0f} | "
                f"{ratio:.2f}{mark} | {target:.2f} | {kv.p50_ms:.2f} | {kv.p99_ms:.2f} | "
                f"{floor.p99_ms:.2f} |"
            )
    return "\n".join(lines)


def chart(results: dict[tuple[str, int], dict[str, dict[str, Sample]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(SCRIPTS)
    groups = [(b, w) for (b, w) in results]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(groups)
    for i, (backend, workers) in enumerate(groups):
        by_app = results[(backend, workers)]
        ratios = [by_app["kv"][w].rps / by_app["floor"][w].rps for w in workloads]
        xs = [j + i * width for j in range(len(workloads))]
        label = backend if workers == 1 else f"{backend} ({workers} workers)"
        ax.bar(xs, ratios, width, label=label)
        if workers == 1:
            ax.hlines(
                TARGETS[backend],
                xs[0] - width / 2,
                xs[-1] + width / 2,
                linestyles="dashed",
                linewidth=0.8,
                colors="grey",
            )
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(workloads))], workloads)
    ax.set_ylabel("kv req/s ÷ floor req/s")
    ax.set_title(f"kv vs bare Starlette, {CONNECTIONS} connections (dashed: targets)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["memory", "tarantool", "redis"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run tarantool and redis with this many workers (1: skip)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is missing (make bench installs it)")
    results: dict[tuple[str, int], dict[str, dict[str, Sample]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            results[(backend, 1)] = bench_backend(backend, args, Path(tmp), 1)
        if args.workers > 1:
            for backend in (b for b in args.backends if b != "memory"):
                results[(backend, args.workers)] = bench_backend(
                    backend, args, Path(tmp), args.workers
                )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    report = (
        f"# kv benchmark, {stamp}\n\n"
        f"Machine: {machine}. Command: `make bench` "
        f"(`bench/run.py --rounds {args.rounds} --duration {args.duration}`). "
        f"Medians of {args.rounds} alternating rounds; {CONNECTIONS} connections; kv and the "
        "floor on CPU 0 (both CPUs with several workers), wrk and the backend on CPU 1; "
        f"operation log on (INFO, to a file). Targets: kv/floor per backend, p99 ≤ "
        f'{P99_TARGET_MS} ms. "GET missing" is a 404 for kv and a 200 for the floor.\n\n'
        + table(results)
        + "\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(report)
    chart(results, RESULTS / "latest.png")
    print("\n" + report)
    print(f"written: {RESULTS / 'latest.md'}, {RESULTS / 'latest.png'}")


if __name__ == "__main__":
    main()
