"""The benchmark's report: Markdown tables with issue 19's targets, and a two-panel chart."""

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from chart import chart
from gc_probe import GcWork
from load import CONNECTIONS, Paced, Sample, median_sample
from new_ops import LIST_PREFIX, NewOps, median_watched
from processes import APP_CPU, LOAD_CPU, ROOT
from targets import (
    LISTING_MS,
    P99_FACTOR,
    RAW_TARGET,
    RSS_PER_KEY,
    TARGETED,
    THROUGHPUT_TARGETS,
    WATCHER_COST,
)
from workloads import FIXED_RATE, SATURATION

RESULTS = ROOT / "bench" / "results"


@dataclass
class BackendRun:
    backend: str
    workers: int
    saturation: dict[str, dict[str, Sample]] = field(default_factory=dict)  # app, workload
    fixed: dict[str, dict[str, Paced]] = field(default_factory=dict)  # app, workload
    hey: dict[str, Paced] = field(default_factory=dict)  # app: GET existing through hey
    gc: dict[str, list[GcWork]] = field(default_factory=dict)  # workload: kv's, per round
    new_ops: NewOps | None = None
    placement: dict[str, str] = field(default_factory=dict)  # process: its CPUs
    failure: str | None = None


@dataclass
class Run:
    args: argparse.Namespace
    backends: list[BackendRun]
    in_process: dict[str, list[str]]  # bench/listing.py's and bench/memory_rss.py's lines
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seconds: float
    targets: list[str] = field(default_factory=list)  # filled while the tables are written

    def target(self, what: str, value: str, ok: bool) -> str:
        """Record a target's outcome; the mark to put beside its value."""
        mark = "✅" if ok else "❌"
        self.targets.append(f"- {mark} {what}: {value}")
        return mark


def mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def saturation_table(run: Run) -> str:
    lines = [
        "| backend | workload | kv req/s | floor req/s | raw req/s | kv/floor | target | kv/raw "
        "| kv p50 ms | kv p99 ms | floor p99 ms | raw p99 ms | kv p99 ÷ floor p99 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in run.backends:
        if not b.saturation:
            if b.failure:
                run.target(f"{b.backend}: the targets", f"not measured: `{b.failure[:160]}`", False)
            continue
        for workload in SATURATION:
            kv, floor, raw = (b.saturation[app][workload.name] for app in ("kv", "floor", "raw"))
            ratio, raw_ratio, tail = kv.rps / floor.rps, kv.rps / raw.rps, kv.p99_ms / floor.p99_ms
            goal = THROUGHPUT_TARGETS.get(b.backend, 0.0)
            ratio_text, raw_text, tail_text = f"{ratio:.2f}", f"{raw_ratio:.2f}", f"{tail:.2f}"
            name = f"{b.backend}" + (f" x{b.workers}" if b.workers > 1 else "")
            if workload.name in TARGETED and b.workers == 1:
                ratio_text += " " + run.target(
                    f"{name} {workload.name}: kv ≥ {goal} of the Starlette floor", ratio_text,
                    ratio >= goal,
                )  # fmt: skip
                tail_text += " " + run.target(
                    f"{name} {workload.name}: p99 at saturation ≤ {P99_FACTOR}x the floor's",
                    f"{kv.p99_ms:.1f} ms vs {floor.p99_ms:.1f} ms ({tail:.2f}x)",
                    tail <= P99_FACTOR,
                )
                if b.backend == "memory":
                    raw_text += " " + run.target(
                        f"memory {workload.name}: kv ≥ {RAW_TARGET} of the raw-ASGI floor",
                        raw_text, raw_ratio >= RAW_TARGET,
                    )  # fmt: skip
            errors = (
                f" ({kv.errors} non-2xx)" if kv.errors and workload.name != "GET missing" else ""
            )
            lines.append(
                f"| {name} | {workload.name} | {kv.rps:,.0f}{errors} | {floor.rps:,.0f} | "
                f"{raw.rps:,.0f} | {ratio_text} | {goal:.2f} | {raw_text} | {kv.p50_ms:.2f} | "
                f"{kv.p99_ms:.2f} | {floor.p99_ms:.2f} | {raw.p99_ms:.2f} | {tail_text} |"
            )
    return "\n".join(lines)


def fixed_table(run: Run) -> str:
    lines = [
        "| backend | workload | offered req/s | kv achieved | kv p50 ms | kv p99 ms | kv p99.9 ms "
        "| kv in-app p99 ms | floor achieved | floor p50 ms | floor p99 ms | floor p99.9 ms "
        "| kv p99 ÷ floor p99 | kv kept up | CPU stolen kv / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for b in run.backends:
        rows = [
            (name, b.fixed["kv"][name], b.fixed["floor"][name]) for name in FIXED_RATE if b.fixed
        ]
        if b.hey:
            rows.append(("GET existing, hey -q (cross-check)", b.hey["kv"], b.hey["floor"]))
        for name, kv, floor in rows:
            tail = kv.p99_ms / floor.p99_ms
            tail_text = f"{tail:.2f}"
            kept = mark(kv.kept_up) + (f" ({kv.errors} errors)" if kv.errors else "")
            if name in TARGETED:
                tail_text += " " + run.target(
                    f"{b.backend} {name}: p99 at {kv.offered:,.0f} req/s ≤ {P99_FACTOR}x the "
                    "floor's, kept up",
                    f"{kv.p99_ms:.1f} ms vs {floor.p99_ms:.1f} ms ({tail:.2f}x)",
                    tail <= P99_FACTOR and kv.kept_up,
                )
            lines.append(
                f"| {b.backend} | {name} | {kv.offered:,.0f} | {kv.achieved:,.0f} | "
                f"{kv.p50_ms:.2f} | {kv.p99_ms:.2f} | {kv.p999_ms:.2f} | {kv.app_p99_ms:.2f} | "
                f"{floor.achieved:,.0f} | {floor.p50_ms:.2f} | {floor.p99_ms:.2f} | "
                f"{floor.p999_ms:.2f} | {tail_text} | {kept} | "
                f"{kv.stolen:.1%} / {floor.stolen:.1%} |"
            )
    return "\n".join(lines)


def gc_table(run: Run) -> str:
    lines = [
        "| backend | workload | kv req/s | gen 0 | gen 1 | gen 2 | GC ms | share of the run "
        "| longest pause ms | objects collected | tracked objects at the end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    thresholds = set()
    for b in run.backends:
        for name, works in b.gc.items():
            if not works:
                continue
            thresholds.add(works[-1].threshold)
            gens = [statistics.median(w.collections[g] for w in works) for g in range(3)]
            lines.append(
                f"| {b.backend} | {name} | {b.saturation['kv'][name].rps:,.0f} | "
                f"{gens[0]:,.0f} | {gens[1]:,.0f} | {gens[2]:,.0f} | "
                f"{statistics.median(w.gc_seconds for w in works) * 1000:,.1f} | "
                f"{statistics.median(w.share for w in works):.1%} | "
                f"{max(w.longest for w in works) * 1000:.1f} | "
                f"{statistics.median(w.collected for w in works):,.0f} | {works[-1].tracked:,} |"
            )
    if len(lines) == 2:
        return ""
    return "\n".join(lines) + (
        f"\n\nMedians per run of {run.args.duration} s (the longest pause: over every run). "
        f"gc.get_threshold(): {', '.join(map(str, sorted(thresholds)))}. Measured by "
        "bench/gc_probe.py, which runs `kv serve` with a `gc.callbacks` hook timing each "
        "collection and writes its counters when signalled, before and after each wrk run."
    )


def new_ops_section(run: Run) -> str:
    sizes, failures = [], []
    table = [
        "| backend | listing pages/s | page p50 ms | page p99 ms | txn/s (10 PUTs each) "
        "| writes/s in txns | single PUT/s | txn writes ÷ single PUTs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    watch = [
        "| backend | watchers | PUT/s | ÷ with 0 | PUT p99 ms | events/s delivered | "
        "delivered by the end | overflows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in run.backends:
        ops = b.new_ops
        if ops is None:
            continue
        sizes.append(
            f"{b.backend} {ops.list_keys:,} under `{LIST_PREFIX}`, {ops.store_keys:,} in all"
        )
        cells = ["—"] * 7
        if ops.listing:
            page = median_sample(ops.listing)
            cells[:3] = [f"{page.rps:,.0f}", f"{page.p50_ms:.2f}", f"{page.p99_ms:.2f}"]
        if ops.txn and ops.puts:
            txn, put = median_sample(ops.txn), median_sample(ops.puts)
            cells[3:] = [f"{txn.rps:,.0f}", f"{txn.rps * 10:,.0f}", f"{put.rps:,.0f}"]
            cells[6:] = [f"{txn.rps * 10 / put.rps:.2f}"]
        table.append(f"| {b.backend} | " + " | ".join(cells) + " |")
        base = median_watched(ops.watched[0]).sample.rps if ops.watched.get(0) else None
        for count, runs in sorted(ops.watched.items()):
            if not runs:
                continue
            w = median_watched(runs)
            share = w.sample.rps / base if base else float("nan")
            share_text = f"{share:.2f}"
            if count == 10:
                share_text += " " + run.target(
                    f"{b.backend}: 10 watchers cost ≤ {WATCHER_COST:.0%} of PUT throughput",
                    f"{1 - share:.1%}", 1 - share <= WATCHER_COST,
                )  # fmt: skip
            watch.append(
                f"| {b.backend} | {count} | {w.sample.rps:,.0f} | {share_text} | "
                f"{w.sample.p99_ms:.2f} | {w.events_per_s:,.0f} | {w.delivered:.1%} | "
                f"{w.overflows} |"
            )
        failures += [f"- {b.backend}: {name} failed: `{why}`" for name, why in ops.failures.items()]
    if not sizes:
        return ""
    note = (
        "wrk as above; a listing page is `GET /kv?prefix=list/&limit=100` from a random "
        "cursor (keys only); a transaction puts the 10 keys of one of 100 groups, the single "
        "PUTs go round the same 1,000 keys. Watchers read `/watch?prefix=w/` while wrk PUTs "
        'round the 100 keys under `w/`; "delivered by the end": events counted by the '
        "watchers ÷ (the watched keys' revisions gained x watchers). The \"0 watchers cost "
        'nothing measurable" target needs kv before and after the watch feature '
        "(bench/ab.py commits), not this run."
    )
    parts = [f"Keys in the store: {'; '.join(sizes)}. {note}", "\n".join(table), "\n".join(watch)]
    return "\n\n".join(parts + (["\n".join(failures)] if failures else []))


def in_process_section(run: Run) -> str:
    lines = run.in_process
    out = []
    listing = lines.get("listing", [])
    if listing:
        out += ["`bench/listing.py` (a page inside the app, memory, one request at a time):", ""]
        out += [f"    {line}" for line in listing]
        pages = [line for line in listing if "values=false" in line]
        median = re.search(r"page median ([\d.]+) ms", pages[-1]) if pages else None
        if median:
            ms = float(median.group(1))
            keys = pages[-1].split(" keys")[0].split()[-1]
            run.target(
                f"memory: a 100-key page ≤ {LISTING_MS} ms in the app at {keys} keys",
                f"median {ms:.3f} ms", ms <= LISTING_MS,
            )  # fmt: skip
    rss = lines.get("memory_rss", [])
    if rss:
        out += ["", "`bench/memory_rss.py` (memory backend):", ""]
        out += [f"    {line}" for line in rss]
        line = next((line for line in rss if "bytes per key" in line), "")
        per_key = re.search(r"([\d,]+) bytes per key", line)
        if per_key:
            value = int(per_key.group(1).replace(",", ""))
            keys = line.split(" keys")[0]
            run.target(
                f"memory: ≤ {RSS_PER_KEY} bytes of RSS per key at {keys} keys",
                f"{value} bytes", value <= RSS_PER_KEY,
            )  # fmt: skip
    return "\n".join(out)


def placement_section(run: Run) -> str:
    lines = []
    for b in run.backends:
        where = ", ".join(f"{process}: CPU {cpus}" for process, cpus in b.placement.items())
        lines.append(f"- {b.backend} x{b.workers}: {where}")
        if b.failure:
            lines.append(f"  - **failed**: `{b.failure[:300]}`")
    return "\n".join(lines)


def _loads(averages: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in averages)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    debian = Path("/etc/debian_version")
    system = f"Debian {debian.read_text().strip()}" if debian.exists() else platform.platform()
    return f"{model}, {os.cpu_count()} CPUs, {system}, Python {platform.python_version()}"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", "src", "bench", ":!bench/results")
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")


def render(run: Run, stamp: str, revision: str, image: str) -> str:
    args = run.args
    run.targets = []
    command = f"bench/run.py --rounds {args.rounds} --duration {args.duration:g}"
    command += f" --backends {' '.join(args.backends)}" + (" --quick" if args.quick else "")
    command += f" --workers {args.workers}" + (
        f" --skip {','.join(sorted(args.skip))}" if args.skip else ""
    )
    sections = [
        ("Throughput and latency at saturation", saturation_table(run)),
        ("Latency at a fixed offered rate (open loop)", fixed_table(run)),
        ("kv's cyclic garbage collector over each saturation run", gc_table(run)),
        ("Bulk operations, kv alone", new_ops_section(run)),
        ("Inside the process", in_process_section(run)),
        ("Where each process ran (`taskset -cp` of its pid)", placement_section(run)),
    ]
    body = "\n\n".join(f"## {title}\n\n{text}" for title, text in sections if text)
    met = sum(line.startswith("- ✅") for line in run.targets)
    return f"""# kv benchmark, {stamp}

Commit {revision}. Machine: {machine()}. Load average (1, 5, 15 min)
{_loads(run.load_before)} at the start, {_loads(run.load_after)} at the end: **a shared
machine**, other work ran beside the benchmark. Command: `make bench` (`{command}`),
{run.seconds / 60:.1f} minutes.

Medians of {args.rounds} rounds of {args.duration:g} s. kv is `kv serve` (its operation log
at INFO, to a file); "floor" is bench/floor.py (bare Starlette, kv's routes, stores
nothing), "raw" bench/floor_asgi.py (a bare ASGI function); all under uvicorn with uvloop,
httptools and no access log, pinned to CPU {APP_CPU}, where no other process of the
benchmark runs. wrk (one thread, {CONNECTIONS} connections), the paced client, the watchers
and the backend server run on CPU {LOAD_CPU}. "GET missing" is a 404 for kv and a 200 for
the floors. The fixed rate is half the Starlette floor's median capacity for that workload
in this run, offered open loop by bench/paced.py over {CONNECTIONS} connections (latency
counted from when a request was due to be sent, so a stall counts for every request it
delays); "kept up": kv answered ≥ 98% of the offered rate, without errors. "kv in-app p99"
is the p99 of the time kv's operation log gives each request (from reaching the app to its
answer leaving it, a backend's round trip included); "CPU stolen" is the share of the
machine's CPU time the hypervisor took during the run (/proc/stat).

## Targets (issue 19): {met} of {len(run.targets)} met

{chr(10).join(run.targets)}

{body}

![throughput ratios and latency at the fixed rate]({image})
"""


def write_report(run: Run) -> None:
    now = datetime.now(UTC)
    revision = commit()
    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(run, RESULTS / "latest.png")
    text = render(run, now.strftime("%Y-%m-%d %H:%M UTC"), revision, "latest.png")
    (RESULTS / "latest.md").write_text(text)
    written = [RESULTS / "latest.md", RESULTS / "latest.png"]
    if not run.args.quick:
        name = f"{now:%Y-%m-%d}-{revision.split()[0]}"
        shutil.copyfile(RESULTS / "latest.png", RESULTS / f"{name}.png")
        dated = render(run, now.strftime("%Y-%m-%d %H:%M UTC"), revision, f"{name}.png")
        (RESULTS / f"{name}.md").write_text(dated)
        written += [RESULTS / f"{name}.md", RESULTS / f"{name}.png"]
    print("\n" + text)
    print("written: " + ", ".join(str(path.relative_to(ROOT)) for path in written))
