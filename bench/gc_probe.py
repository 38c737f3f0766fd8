"""`kv serve` with the cyclic GC's work recorded: the benchmark's launcher, not part of kv.

    BENCH_GC_STATS=/tmp/gc.json python bench/gc_probe.py serve [kv serve's flags]

runs kv's own command line (`kv.entrypoints.cli.main`) after installing a `gc.callbacks`
hook that times every collection. On SIGUSR1, and at exit, it writes to $BENCH_GC_STATS (as
one JSON object, replaced atomically) `gc.get_stats()` and, per generation, the collections
counted by the hook, the seconds they took and the longest one since the previous snapshot;
bench/run.py takes a snapshot before and after each wrk run and reports the difference.
Nothing of this is in kv: a server started as users start it has no hook and pays nothing.
The hook costs two perf_counter calls per collection (well under 1% of a request's time).
"""

import gc
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

GENERATIONS = 3


class GcProbe:
    """Collections, seconds and the longest pause per generation, as the hook saw them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.snapshots = 0
        self.collections = [0] * GENERATIONS
        self.seconds = [0.0] * GENERATIONS
        self.longest = [0.0] * GENERATIONS  # since the previous snapshot
        self._started = 0.0

    def hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        took = time.perf_counter() - self._started
        self.collections[generation] += 1
        self.seconds[generation] += took
        self.longest[generation] = max(self.longest[generation], took)

    def write(self) -> None:
        self.snapshots += 1
        snapshot = {
            "snapshot": self.snapshots,
            "pid": os.getpid(),
            "time": time.monotonic(),
            "collections": self.collections,
            "seconds": self.seconds,
            "longest": self.longest,
            "get_stats": gc.get_stats(),
            "threshold": gc.get_threshold(),
            "frozen": gc.get_freeze_count(),
            "tracked": len(gc.get_objects()),  # what a full collection walks
        }
        self.longest = [0.0] * GENERATIONS
        partial = self.out.with_suffix(".partial")
        partial.write_text(json.dumps(snapshot))
        partial.replace(self.out)

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.write()

    def on_term(self, signum: int, _frame: FrameType | None) -> None:
        """uvicorn handles SIGTERM while it serves, then raises it again once it has shut
        down: write the last snapshot, then die of the signal as kv would have."""
        self.write()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


@dataclass
class GcWork:
    """The collector's work between two snapshots."""

    seconds: float  # wall time between the snapshots
    collections: list[int]  # per generation
    gc_seconds: float  # all generations
    longest: float  # the longest collection, any generation
    collected: int  # unreachable objects freed (cyclic garbage)
    tracked: int  # objects the collector tracks at the end (a full collection walks them)
    threshold: tuple[int, ...]  # gc.get_threshold()

    @property
    def share(self) -> float:
        return self.gc_seconds / self.seconds if self.seconds else 0.0


def difference(before: dict[str, Any], after: dict[str, Any]) -> GcWork:
    return GcWork(
        seconds=after["time"] - before["time"],
        collections=[
            a - b for a, b in zip(after["collections"], before["collections"], strict=True)
        ],
        gc_seconds=sum(after["seconds"]) - sum(before["seconds"]),
        longest=max(after["longest"]),
        collected=sum(a["collected"] for a in after["get_stats"])
        - sum(b["collected"] for b in before["get_stats"]),
        tracked=after["tracked"],
        threshold=tuple(after["threshold"]),
    )


def main() -> int:
    out = os.environ.get("BENCH_GC_STATS")
    if not out:
        sys.exit("gc_probe: set BENCH_GC_STATS to the file to write")
    # Run as a script, this file's folder (bench/) is sys.path[0]: keep its modules out of kv's way.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    probe = GcProbe(Path(out))
    gc.callbacks.append(probe.hook)
    signal.signal(signal.SIGUSR1, probe.on_signal)
    signal.signal(signal.SIGTERM, probe.on_term)
    from kv.entrypoints.cli import main as kv_main

    try:
        return kv_main(sys.argv[1:])
    finally:
        probe.write()


if __name__ == "__main__":
    sys.exit(main())
