"""The load generators, pinned to LOAD_CPU: wrk (closed loop: as fast as the server answers),
bench/paced.py (open loop: a fixed offered rate) and hey (its `-q` pacing, as a cross-check).
"""

import json
import math
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from processes import LOAD_CPU, ROOT
from workloads import Workload

CONNECTIONS = 50


@dataclass
class Sample:
    """One wrk run: requests/s, latency percentiles, non-2xx answers, requests made."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


@dataclass
class Paced:
    """One run at a fixed offered rate."""

    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int  # non-2xx answers, connections lost and requests never answered
    pacer_late_ms: float  # the client's own lateness (p99): high means a loaded client
    # kv only (its operation log's `ms=`: from the request reaching the app to its answer
    # leaving it, backend round trip included; what the network, the loop and the parser add
    # is the client's latency minus this), and the machine's CPU time the hypervisor took.
    app_p99_ms: float = math.nan
    stolen: float = math.nan

    @property
    def kept_up(self) -> bool:
        return self.achieved >= 0.98 * self.offered and self.errors == 0


def to_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, workload: Workload, duration: int, workdir: Path) -> Sample:
    command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}"]
    command += [f"-d{duration}s", "--latency", url + workload.path]
    if workload.lua:
        script = workdir / (re.sub(r"\W+", "_", workload.name) + ".lua")
        script.write_text(workload.lua)
        command[4:4] = ["-s", str(script)]  # after "wrk"
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    output = done.stdout

    def find(pattern: str) -> str:
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(f"wrk's output has no {pattern!r}:\n{output}")
        return match.group(1)

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    if errors:
        print(f"    wrk: {errors.group(0)}", flush=True)
    return Sample(
        float(find(r"Requests/sec:\s+([\d.]+)")),
        to_ms(find(r"\s50%\s+(\S+)")),
        to_ms(find(r"\s99%\s+(\S+)")),
        int(bad.group(1)) if bad else 0,
        int(find(r"(\d+) requests in")),
    )


def paced(port: int, workload: Workload, rate: float, duration: float) -> Paced:
    command = ["taskset", "-c", LOAD_CPU, sys.executable, str(ROOT / "bench" / "paced.py")]
    command += ["--port", str(port), "--workload", workload.name, "--rate", f"{rate:.0f}"]
    command += ["--duration", str(duration), "--connections", str(CONNECTIONS)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output)
    bad = sum(n for status, n in result["statuses"].items() if not status.startswith("2"))
    return Paced(
        result["offered"],
        result["achieved"],
        result["p50_ms"],
        result["p99_ms"],
        result["p999_ms"],
        bad + result["connections_lost"] + result["unanswered"],
        result["pacer_late_p99_ms"],
    )


def hey(url: str, rate: float, duration: float) -> Paced:
    """A GET at `rate` with `hey -z -c 50 -q rate/50 -o csv`, for comparison with paced().

    hey's `-q` is per worker (the total is c x q); each worker waits for its answer before
    taking the next tick and drops the ticks it missed, so a stall lowers the rate instead
    of adding to the latency. Its summary stops at p99; its CSV has every answered request
    (the latency in 0.1 ms steps) but leaves out failed ones: a failure shows only as a lower
    achieved rate, like a dropped tick.
    """
    seconds = max(1, round(duration))
    command = ["taskset", "-c", LOAD_CPU, "hey", "-z", f"{seconds}s", "-c", str(CONNECTIONS)]
    command += ["-q", f"{rate / CONNECTIONS:.2f}", "-o", "csv", url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = [line.split(",") for line in output.splitlines()[1:] if line]
    latencies = sorted(float(row[0]) * 1000 for row in rows)
    statuses = [row[6] for row in rows]

    def at(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * fraction))]

    return Paced(
        rate,
        len(rows) / seconds,
        at(0.5),
        at(0.99),
        at(0.999),
        sum(not s.startswith("2") for s in statuses),
        math.nan,
    )


def median_sample(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
        max(s.errors for s in samples),
        sum(s.requests for s in samples),
    )


def median_paced(runs: list[Paced]) -> Paced:
    return Paced(
        statistics.median(r.offered for r in runs),
        statistics.median(r.achieved for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.p999_ms for r in runs),
        max(r.errors for r in runs),
        statistics.median(r.pacer_late_ms for r in runs),
        statistics.median(r.app_p99_ms for r in runs),
        statistics.median(r.stolen for r in runs),
    )


def app_p99_ms(log: Path, offset: int) -> float:
    """The p99 of the `ms=` of the operations kv logged to `log` after byte `offset`."""
    with log.open("rb") as lines:
        lines.seek(offset)
        times = sorted(float(ms) for ms in re.findall(rb" ms=([0-9.]+)", lines.read()))
    return times[min(len(times) - 1, int(len(times) * 0.99))] if times else math.nan
