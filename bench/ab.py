"""A against B: kv on memory under wrk, with a setting at two values or at two commits.

Alternating rounds of wrk (one thread, 50 connections) against `kv serve`, the server pinned to
CPU 0 and wrk to CPU 1, the log written to a file; prints requests/s per round and, per
workload, the ratio of the medians and of the best rounds (less sensitive to other load).

    .venv/bin/python bench/ab.py setting KV_LOG_LEVEL INFO WARNING   # the operation log
    .venv/bin/python bench/ab.py setting KV_METRICS true false       # Prometheus metrics
    .venv/bin/python bench/ab.py commits HEAD 9085f82~               # a change's cost
    options: [--rounds 5] [--duration 5]

`commits` runs each commit's `src/` (exported with `git archive`) on this checkout's .venv.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PUT_SCRIPT = """
wrk.method = "PUT"
wrk.body = '{"value": {"n": 12345, "s": "some text"}}'
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(variables: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KV_PORT": str(port), "KV_BACKEND": "memory", **variables}
    env.pop("KV_METRICS_DIR", None)
    process = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "kv.entrypoints.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    httpx.post(f"http://127.0.0.1:{port}/kv", json={"key": "bench", "value": {"n": 1}})
    return process


def wrk(url: str, duration: int, script: Path | None) -> float:
    command = ["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{duration}s", url]
    if script is not None:
        command[5:5] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(output)
    return float(match.group(1))


def export(revision: str, into: Path) -> Path:
    """The `src/` of `revision`, exported into `into`; what PYTHONPATH should name."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "archive", revision, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    kinds = parser.add_subparsers(dest="kind", required=True)
    setting = kinds.add_parser("setting", help="a KV_* variable at two values")
    setting.add_argument("variable", help="a KV_* variable, e.g. KV_LOG_LEVEL")
    setting.add_argument("on", help="the value whose cost is measured, e.g. INFO")
    setting.add_argument("off", help="the value to compare with, e.g. WARNING")
    commits = kinds.add_parser("commits", help="two commits of kv")
    commits.add_argument("on", help="the commit measured, e.g. HEAD")
    commits.add_argument("off", help="the commit to compare with, e.g. HEAD~3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        variants: dict[str, dict[str, str]] = {}
        if args.kind == "setting":
            variants = {value: {args.variable: value} for value in (args.on, args.off)}
        else:
            for index, revision in enumerate((args.on, args.off)):
                source = export(revision, Path(tmp) / f"rev{index}")
                variants[revision] = {"PYTHONPATH": str(source)}
        put = Path(tmp) / "put.lua"
        put.write_text(PUT_SCRIPT)
        results: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            order = (args.on, args.off) if round_ % 2 == 0 else (args.off, args.on)
            for label in order:
                port = free_port()
                log = Path(tmp) / f"kv-{round_}-{order.index(label)}.log"
                process = start(variants[label], port, log)
                try:
                    for name, script in (("GET", None), ("PUT", put)):
                        rps = wrk(f"http://127.0.0.1:{port}/kv/bench", args.duration, script)
                        results.setdefault((name, label), []).append(rps)
                        print(f"round {round_} {name} {label}: {rps:,.0f} req/s", flush=True)
                finally:
                    process.terminate()
                    process.wait()
        print(f"\nworkload  statistic  {args.on:>12}  {args.off:>12}  ratio")
        for name in ("GET", "PUT"):
            for statistic, pick in (("median", statistics.median), ("best", max)):
                on = pick(results[(name, args.on)])
                off = pick(results[(name, args.off)])
                print(f"{name:8}  {statistic:9}  {on:12,.0f}  {off:12,.0f}  {on / off:5.3f}")


if __name__ == "__main__":
    main()
