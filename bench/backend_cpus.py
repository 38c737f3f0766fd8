"""Whose is kv's latency at a fixed rate on a network backend: the backend's, or the CPU it
shares with the load?

`make bench` pins kv to CPU 0 and everything else (the paced client, wrk, the backend
server) to CPU 1: with two CPUs, the backend shares its CPU with the client that loads kv.
This runs kv (CPU 0) and bench/paced.py (CPU 1) as `make bench` does, and moves the backend
server's threads between rounds: on CPU 1 (as in `make bench`), or free to run on either
CPU (`taskset -a -cp 0,1`), alternating; then prints the medians of each side. Each round also
prints the share of CPU time the hypervisor took meanwhile (steal, /proc/stat).

    .venv/bin/python bench/backend_cpus.py [--backend tarantool] [--rate 5000]
        [--rounds 3] [--duration 4] [--workloads "GET existing,PUT overwrite"]
"""

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from load import Paced, paced
from processes import LOAD_CPU, backend_server, cpu_times, serve, stolen_share
from workloads import BY_NAME

PLACEMENTS = {"backend on CPU 1": LOAD_CPU, "backend on CPUs 0,1": "0,1"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="tarantool", choices=["tarantool", "redis"])
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4)
    parser.add_argument("--workloads", default="GET existing,PUT overwrite")
    args = parser.parse_args()
    names = [name.strip() for name in args.workloads.split(",")]
    runs: dict[tuple[str, str], list[Paced]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        backend_server(args.backend, Path(tmp)) as backend,
        serve("kv", backend, Path(tmp)) as server,
    ):
        assert backend.pid is not None
        for round_ in range(args.rounds):
            order = list(PLACEMENTS) if round_ % 2 == 0 else list(reversed(PLACEMENTS))
            for placement in order:
                subprocess.run(
                    ["taskset", "-a", "-cp", PLACEMENTS[placement], str(backend.pid)],
                    check=True,
                    capture_output=True,
                )
                for name in names:
                    before = cpu_times()
                    result = paced(server.port, BY_NAME[name], args.rate, args.duration)
                    stolen = stolen_share(before, cpu_times())
                    runs.setdefault((name, placement), []).append(result)
                    print(
                        f"round {round_} {name:14} {placement:20} achieved"
                        f" {result.achieved:7,.0f}  p50 {result.p50_ms:6.2f}  p99"
                        f" {result.p99_ms:6.2f}  p99.9 {result.p999_ms:6.2f} ms"
                        f"  errors {result.errors}  stolen {stolen:.1%}",
                        flush=True,
                    )
    print(f"\n{args.backend} at {args.rate:,.0f} req/s, medians of {args.rounds} rounds (ms):")
    for name in names:
        for placement in PLACEMENTS:
            done = runs[(name, placement)]
            p50, p99, p999 = (
                statistics.median(getattr(r, field) for r in done)
                for field in ("p50_ms", "p99_ms", "p999_ms")
            )
            print(f"  {name:14} {placement:20} p50 {p50:6.2f}  p99 {p99:6.2f}  p99.9 {p999:6.2f}")


if __name__ == "__main__":
    main()
