"""The report's chart: throughput ratios at saturation, and latency at the fixed rate."""

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from load import CONNECTIONS
from targets import RAW_TARGET, TARGETED, THROUGHPUT_TARGETS
from workloads import FIXED_RATE, SATURATION

if TYPE_CHECKING:
    from report import Run

COLORS = {"memory": "tab:blue", "tarantool": "tab:orange", "redis": "tab:green"}


def chart(run: "Run", path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in run.backends if b.saturation and b.workers == 1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [5, 3]})
    workloads = [w.name for w in SATURATION]
    bars = [(f"{b.backend} ÷ Starlette floor", b, "floor", "") for b in backends]
    bars += [
        (f"{b.backend} ÷ raw floor", b, "raw", "//") for b in backends if b.backend == "memory"
    ]
    width = 0.8 / max(1, len(bars))
    for i, (label, b, floor, hatch) in enumerate(bars):
        ratios = [b.saturation["kv"][w].rps / b.saturation[floor][w].rps for w in workloads]
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(workloads))]
        color = COLORS.get(b.backend, "grey")
        left.bar(xs, ratios, width, label=label, color=color, hatch=hatch,
                 alpha=0.5 if hatch else 1.0)  # fmt: skip
        goal = RAW_TARGET if hatch else THROUGHPUT_TARGETS.get(b.backend)
        for x, w in zip(xs, workloads, strict=True):
            if goal and w in TARGETED:
                left.hlines(goal, x - width / 2, x + width / 2, colors="black", linewidth=1.5)
    left.set_xticks(range(len(workloads)), [w.replace(" ", "\n", 1) for w in workloads])
    left.set_ylabel("kv req/s ÷ floor req/s")
    left.set_title(f"Throughput at saturation, wrk {CONNECTIONS} connections (black: targets)")
    left.legend(fontsize="small")
    fixed = [b for b in backends if b.fixed]
    if fixed:
        groups = [("floor", None)] + [(b.backend, b) for b in fixed]
        width = 0.8 / len(groups)
        for i, (label, kv) in enumerate(groups):
            xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(FIXED_RATE))]
            if kv is None:  # the Starlette floor: the median of its runs in every backend's block
                p99 = [
                    statistics.median(x.fixed["floor"][w].p99_ms for x in fixed) for w in FIXED_RATE
                ]
                p50 = [
                    statistics.median(x.fixed["floor"][w].p50_ms for x in fixed) for w in FIXED_RATE
                ]
                color = "lightgrey"
            else:
                p99 = [kv.fixed["kv"][w].p99_ms for w in FIXED_RATE]
                p50 = [kv.fixed["kv"][w].p50_ms for w in FIXED_RATE]
                color = COLORS.get(kv.backend, "grey")
            right.bar(xs, p99, width, label=f"{label} p99", color=color)
            right.scatter(xs, p50, marker="_", s=200, color="black", zorder=3)
        right.set_yscale("log")
        right.set_xticks(range(len(FIXED_RATE)), [w.replace(" ", "\n", 1) for w in FIXED_RATE])
        right.set_ylabel("latency, ms (log scale)")
        right.set_title("At half the floor's capacity, open loop: p99 (bars), p50 (—)")
        right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
