"""How much the operation log costs: kv on memory with the log on (INFO) and off (WARNING).

Runs alternating rounds of wrk against `kv serve`, the server pinned to CPU 0 and wrk to
CPU 1, and prints requests/s per round and the median ratio on/off per workload.

    .venv/bin/python bench/log_cost.py [--rounds 5] [--duration 5]
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


def start(level: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KV_PORT": str(port), "KV_LOG_LEVEL": level, "KV_BACKEND": "memory"}
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        put = Path(tmp) / "put.lua"
        put.write_text(PUT_SCRIPT)
        results: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for level in ("INFO", "WARNING") if round_ % 2 == 0 else ("WARNING", "INFO"):
                port = free_port()
                # The log goes to a file as it would in production (not to a terminal).
                process = start(level, port, Path(tmp) / f"kv-{level}.log")
                try:
                    for name, script in (("GET", None), ("PUT", put)):
                        rps = wrk(f"http://127.0.0.1:{port}/kv/bench", args.duration, script)
                        results.setdefault((name, level), []).append(rps)
                        print(f"round {round_} {name} log={level}: {rps:,.0f} req/s", flush=True)
                finally:
                    process.terminate()
                    process.wait()
        print("\nworkload  log on (INFO)  log off (WARNING)  on/off")
        for name in ("GET", "PUT"):
            on = statistics.median(results[(name, "INFO")])
            off = statistics.median(results[(name, "WARNING")])
            print(f"{name:8}  {on:13,.0f}  {off:17,.0f}  {on / off:6.3f}")


if __name__ == "__main__":
    main()
