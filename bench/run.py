"""kv as users run it against the floors, and what its users feel: `make bench`.

Per backend, with the backend server on CPU 1:
1. kv's bulk operations, kv alone (bench/new_ops.py): a listing page from a store of
   100,000 keys loaded through POST /txn, a 10-operation transaction against 10 single PUTs,
   and PUT with 0, 10 and 100 SSE watchers on the written prefix.
2. Saturation: alternating rounds of wrk (one thread, 50 connections, on CPU 1) against
   `kv serve` (under bench/gc_probe.py, which records its cyclic GC), the Starlette floor
   (bench/floor.py) and the raw-ASGI floor (bench/floor_asgi.py), each alone on CPU 0 under
   the same uvicorn settings (uvloop, httptools, no access log); kv's operation log is on
   (INFO, to a file), as it is by default.
3. A fixed offered rate, open loop (bench/paced.py), at half the Starlette floor's median
   capacity for the workload in step 2: kv and the Starlette floor, alternating; on memory,
   hey's `-q` pacing on GET as a cross-check.
Then, in one process on CPU 0: bench/listing.py (a page inside the app, 1,000,000 keys) and
bench/memory_rss.py (RSS per key at 1,000,000 keys). The report (bench/report.py) has the
medians over rounds, the targets of issue 19 with ✅/❌, where each process ran, the commit,
the machine and its load; it is written to bench/results/latest.md and latest.png (and,
unless --quick, to a copy named by date and commit).

    .venv/bin/python bench/run.py [--backends memory tarantool redis] [--rounds 3]
        [--duration 4] [--workers 1] [--quick] [--skip new-ops,fixed,in-process]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gc_probe import difference
from load import Paced, Sample, app_p99_ms, hey, median_paced, median_sample, paced, wrk
from new_ops import LIST_KEYS, bench_new_ops
from processes import (
    LOAD_CPU,
    ROOT,
    Backend,
    backend_server,
    cpu_times,
    cpus_of,
    gc_snapshot,
    serve,
    stolen_share,
)
from report import BackendRun, Run, write_report
from workloads import BY_NAME, FIXED_RATE, SATURATION

APPS = ("kv", "floor", "raw")
FIXED_APPS = ("kv", "floor")
FIXED_SHARE = 0.5  # of the Starlette floor's capacity


def saturation(
    run: BackendRun, backend: Backend, args: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, list[Sample]]]:
    samples: dict[str, dict[str, list[Sample]]] = {app: {} for app in APPS}
    for round_ in range(args.rounds):
        for app in APPS[round_ % 3 :] + APPS[: round_ % 3]:
            probe = app == "kv" and run.workers == 1
            with serve(app, backend, workdir, workers=run.workers, gc_probe=probe) as server:
                run.placement[app] = cpus_of(server.process.pid)
                for workload in SATURATION:
                    before = gc_snapshot(server) if probe else None
                    sample = wrk(server.url, workload, args.duration, workdir)
                    samples[app].setdefault(workload.name, []).append(sample)
                    if before is not None:
                        work = difference(before, gc_snapshot(server))
                        run.gc.setdefault(workload.name, []).append(work)
                    print(
                        f"  {run.backend} x{run.workers} round {round_} {app:5} "
                        f"{workload.name:16} {sample.rps:9,.0f} req/s  p50 {sample.p50_ms:6.2f} "
                        f"ms  p99 {sample.p99_ms:6.2f} ms",
                        flush=True,
                    )
    return samples


def fixed_rate(run: BackendRun, backend: Backend, args: argparse.Namespace, workdir: Path) -> None:
    rates = {name: FIXED_SHARE * run.saturation["floor"][name].rps for name in FIXED_RATE}
    runs: dict[str, dict[str, list[Paced]]] = {app: {} for app in FIXED_APPS}
    heys: dict[str, list[Paced]] = {}
    for round_ in range(args.rounds):
        for app in FIXED_APPS[round_ % 2 :] + FIXED_APPS[: round_ % 2]:
            with serve(app, backend, workdir, workers=run.workers) as server:
                for name in FIXED_RATE:
                    log = workdir / "kv-ops.log"  # kv's (serve() names it)
                    offset = log.stat().st_size if app == "kv" else 0
                    before = cpu_times()
                    result = paced(server.port, BY_NAME[name], rates[name], args.duration)
                    result.stolen = stolen_share(before, cpu_times())
                    if app == "kv":
                        time.sleep(0.3)  # the operation log is written every 100 ms
                        result.app_p99_ms = app_p99_ms(log, offset)
                    runs[app].setdefault(name, []).append(result)
                    _print_paced(run, round_, app, name, result)
                if run.backend == "memory" and run.workers == 1:
                    result = hey(server.url + "/kv/bench", rates["GET existing"], args.duration)
                    heys.setdefault(app, []).append(result)
                    _print_paced(run, round_, app, "GET (hey)", result)
    run.fixed = {app: {n: median_paced(r) for n, r in by.items()} for app, by in runs.items()}
    run.hey = {app: median_paced(r) for app, r in heys.items()}


def _print_paced(run: BackendRun, round_: int, app: str, name: str, result: Paced) -> None:
    print(
        f"  {run.backend} x{run.workers} round {round_} {app:5} {name:16} at "
        f"{result.offered:7,.0f}/s: {result.achieved:7,.0f}/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:6.2f} ms  p99.9 {result.p999_ms:6.2f} ms  errors {result.errors}"
        f"  in-app p99 {result.app_p99_ms:.2f} ms  stolen {result.stolen:.1%}",
        flush=True,
    )


def bench_backend(run: BackendRun, args: argparse.Namespace, workdir: Path) -> None:
    """Fill `run` step by step, so that a step that fails leaves the ones before it."""
    with backend_server(run.backend, workdir) as server:
        if server.pid:
            run.placement[f"{run.backend} server"] = cpus_of(server.pid)
        run.placement["wrk, paced client, watchers (taskset -c)"] = LOAD_CPU
        if run.workers == 1 and "new-ops" not in args.skip:
            with serve("kv", server, workdir) as kv:
                list_keys = 10_000 if args.quick else LIST_KEYS
                run.new_ops = bench_new_ops(
                    kv, args.rounds, args.duration, workdir, list_keys=list_keys
                )
        samples = saturation(run, server, args, workdir)
        run.saturation = {
            app: {name: median_sample(runs) for name, runs in by.items()}
            for app, by in samples.items()
        }
        if "fixed" not in args.skip:
            fixed_rate(run, server, args, workdir)


def in_process(args: argparse.Namespace) -> dict[str, list[str]]:
    """bench/listing.py and bench/memory_rss.py on CPU 0: their result lines."""
    keys = "100000" if args.quick else "1000000"
    pages = "200" if args.quick else "2000"
    commands = {
        "listing": ["bench/listing.py", "--sizes", keys, "--pages", pages],
        "memory_rss": ["bench/memory_rss.py", "--keys", keys],
    }
    lines: dict[str, list[str]] = {}
    for name, command in commands.items():
        print(f"  {' '.join(command)}", flush=True)
        output = subprocess.run(
            ["taskset", "-c", "0", sys.executable, *command],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout  # fmt: skip
        lines[name] = output.strip().splitlines()
        print("    " + "\n    ".join(lines[name]), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["memory", "tarantool", "redis"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per run")
    parser.add_argument(
        "--workers", type=int, default=1, help="also run tarantool and redis with this many"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller stores (10,000 listed keys, 100,000 in-process)",
    )
    parser.add_argument("--skip", default="", help="comma-separated: new-ops, fixed, in-process")
    args = parser.parse_args()
    args.skip = set(filter(None, args.skip.split(",")))
    for tool in ("wrk", "hey", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is missing (make bench installs it)")
    started = time.monotonic()
    load_before = os.getloadavg()
    runs: list[BackendRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [(b, 1) for b in args.backends]
        plan += [(b, args.workers) for b in args.backends if b != "memory" and args.workers > 1]
        for backend, workers in plan:
            runs.append(BackendRun(backend, workers))
            try:
                bench_backend(runs[-1], args, Path(tmp))
            except Exception as exc:  # the report says why; the other backends go on
                print(f"  {backend} x{workers} failed: {exc!r}", flush=True)
                runs[-1].failure = f"{type(exc).__name__}: {exc}"
    lines = {} if "in-process" in args.skip else in_process(args)
    report = Run(args, runs, lines, load_before, os.getloadavg(), time.monotonic() - started)
    write_report(report)


if __name__ == "__main__":
    main()
