"""A against B: kv under wrk, with a setting at two values or at two commits.

Alternating rounds of wrk (one thread, 50 connections) against `kv serve`, the server pinned to
CPU 0, wrk (and the backend server, one for both sides) to CPU 1, the log written to a file,
kv's cyclic GC recorded by bench/gc_probe.py. Prints requests/s per round and, per workload,
the ratio of the medians and of the best rounds (less sensitive to other load), then the
collector's work under each: the collections per generation, their total and longest time,
over all rounds.

    .venv/bin/python bench/ab.py setting KV_LOG_LEVEL INFO WARNING   # the operation log
    .venv/bin/python bench/ab.py setting KV_METRICS true false       # Prometheus metrics
    .venv/bin/python bench/ab.py commits HEAD 9085f82~               # a change's cost
    options: [--rounds 5] [--duration 5] [--workloads "GET existing,PUT overwrite"]
             [--watchers N]   # PUTs round w/0..w/99 while N SSE watchers read w/ instead
             [--backend memory|tarantool|redis]   # one server (on CPU 1) for both sides

`commits` runs each commit's `src/` (exported with `git archive`) on this checkout's .venv.
"""

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from pathlib import Path

from gc_probe import GcWork, difference
from load import wrk
from new_ops import put_watched, watching
from processes import Backend, backend_server, gc_snapshot, serve
from workloads import BY_NAME

DEFAULT_WORKLOADS = "GET existing,PUT overwrite,POST new keys"


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
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS, help="names from workloads.py")
    parser.add_argument("--watchers", type=int, help="N watchers of PUTs (bench/new_ops.py)")
    parser.add_argument("--backend", default="memory", choices=["memory", "tarantool", "redis"])
    kinds = parser.add_subparsers(dest="kind", required=True)
    setting = kinds.add_parser("setting", help="a KV_* variable at two values")
    setting.add_argument("variable", help="a KV_* variable, e.g. KV_LOG_LEVEL")
    setting.add_argument("on", help="the value whose cost is measured, e.g. INFO")
    setting.add_argument("off", help="the value to compare with, e.g. WARNING")
    commits = kinds.add_parser("commits", help="two commits of kv")
    commits.add_argument("on", help="the commit measured, e.g. HEAD")
    commits.add_argument("off", help="the commit to compare with, e.g. HEAD~3")
    args = parser.parse_args()
    workloads = [BY_NAME[name.strip()] for name in args.workloads.split(",")]
    if args.watchers is not None:
        workloads = [put_watched()]
    with (
        tempfile.TemporaryDirectory() as tmp,
        backend_server(args.backend, Path(tmp)) as backend,
    ):
        workdir = Path(tmp)
        variants: dict[str, Backend] = {}
        for index, label in enumerate((args.on, args.off)):
            if args.kind == "setting":
                variables = {args.variable: label}
            else:
                variables = {"PYTHONPATH": str(export(label, workdir / f"rev{index}"))}
            variants[label] = Backend(backend.name, {**backend.settings, **variables}, backend.pid)
        results: dict[tuple[str, str], list[float]] = {}
        collector: dict[str, list[GcWork]] = {label: [] for label in variants}
        for round_ in range(args.rounds):
            order = (args.on, args.off) if round_ % 2 == 0 else (args.off, args.on)
            for label in order:
                with (
                    serve("kv", variants[label], workdir, gc_probe=True) as server,
                    contextlib.ExitStack() as stack,
                ):
                    if args.watchers is not None:
                        stack.enter_context(watching(server, args.watchers))
                    for workload in workloads:
                        before = gc_snapshot(server)
                        sample = wrk(server.url, workload, args.duration, workdir)
                        collector[label].append(difference(before, gc_snapshot(server)))
                        results.setdefault((workload.name, label), []).append(sample.rps)
                        print(
                            f"round {round_} {workload.name:14} {label}: {sample.rps:,.0f} req/s"
                            f"  p99 {sample.p99_ms:.2f} ms",
                            flush=True,
                        )
        print(f"\n{'workload':14}  statistic  {args.on:>12}  {args.off:>12}  ratio")
        for workload in workloads:
            for statistic, pick in (("median", statistics.median), ("best", max)):
                on = pick(results[(workload.name, args.on)])
                off = pick(results[(workload.name, args.off)])
                print(
                    f"{workload.name:14}  {statistic:9}  {on:12,.0f}  {off:12,.0f}  {on / off:5.3f}"
                )
        header = f"{'GC, all rounds':14}  {'gen0/gen1/gen2':>16}   total ms  longest ms"
        print("\n" + header)
        for label, works in collector.items():
            counts = "/".join(str(sum(w.collections[g] for w in works)) for g in range(3))
            total = sum(w.gc_seconds for w in works) * 1000
            longest = max(w.longest for w in works) * 1000
            print(f"{label:14}  {counts:>16}  {total:9.1f}  {longest:10.2f}")


if __name__ == "__main__":
    main()
