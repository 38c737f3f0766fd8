"""How much the Prometheus metrics cost: kv on memory with KV_METRICS on and off.

Same method as log_cost.py (whose helpers it uses): alternating rounds of wrk against
`kv serve`, the server pinned to CPU 0 and wrk to CPU 1, the operation log on (INFO, to a
file) in both, and the ratio on/off per workload, of the medians and of the best rounds.

    .venv/bin/python bench/metrics_cost.py [--rounds 5] [--duration 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from log_cost import PUT_SCRIPT, free_port, wrk


def start(metrics: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KV_PORT": str(port), "KV_METRICS": metrics, "KV_BACKEND": "memory"}
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
            for metrics in ("true", "false") if round_ % 2 == 0 else ("false", "true"):
                port = free_port()
                process = start(metrics, port, Path(tmp) / f"kv-{metrics}.log")
                try:
                    for name, script in (("GET", None), ("PUT", put)):
                        rps = wrk(f"http://127.0.0.1:{port}/kv/bench", args.duration, script)
                        results.setdefault((name, metrics), []).append(rps)
                        print(
                            f"round {round_} {name} metrics={metrics}: {rps:,.0f} req/s", flush=True
                        )
                finally:
                    process.terminate()
                    process.wait()
        # Medians, and the best round of each (less sensitive to other load on the machine).
        print("\nworkload  statistic  metrics on  metrics off  on/off")
        for name in ("GET", "PUT"):
            for label, pick in (("median", statistics.median), ("best", max)):
                on = pick(results[(name, "true")])
                off = pick(results[(name, "false")])
                print(f"{name:8}  {label:9}  {on:10,.0f}  {off:11,.0f}  {on / off:6.3f}")


if __name__ == "__main__":
    main()
