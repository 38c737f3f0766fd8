"""What one setting costs: kv on memory with a variable at one value and at another, under wrk.

Alternating rounds of wrk (one thread, 50 connections) against `kv serve`, the server pinned to
CPU 0 and wrk to CPU 1, the log written to a file; prints requests/s per round and, per
workload, the ratio of the medians and of the best rounds (less sensitive to other load).

    .venv/bin/python bench/setting_cost.py KV_LOG_LEVEL INFO WARNING   # the operation log
    .venv/bin/python bench/setting_cost.py KV_METRICS true false       # Prometheus metrics
    options: [--rounds 5] [--duration 5]
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


def start(variable: str, value: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KV_PORT": str(port), "KV_BACKEND": "memory", variable: value}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variable", help="a KV_* variable, e.g. KV_LOG_LEVEL")
    parser.add_argument("on", help="the value whose cost is measured, e.g. INFO")
    parser.add_argument("off", help="the value to compare with, e.g. WARNING")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        put = Path(tmp) / "put.lua"
        put.write_text(PUT_SCRIPT)
        results: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            order = (args.on, args.off) if round_ % 2 == 0 else (args.off, args.on)
            for value in order:
                port = free_port()
                process = start(args.variable, value, port, Path(tmp) / f"kv-{value}.log")
                try:
                    for name, script in (("GET", None), ("PUT", put)):
                        rps = wrk(f"http://127.0.0.1:{port}/kv/bench", args.duration, script)
                        results.setdefault((name, value), []).append(rps)
                        print(f"round {round_} {name} {args.variable}={value}: {rps:,.0f} req/s")
                finally:
                    process.terminate()
                    process.wait()
        print(f"\nworkload  statistic  {args.on:>12}  {args.off:>12}  ratio")
        for name in ("GET", "PUT"):
            for label, pick in (("median", statistics.median), ("best", max)):
                on = pick(results[(name, args.on)])
                off = pick(results[(name, args.off)])
                print(f"{name:8}  {label:9}  {on:12,.0f}  {off:12,.0f}  {on / off:5.3f}")


if __name__ == "__main__":
    main()
