"""Where `kv serve`'s time goes under load: a py-spy profile of one workload, summarised.

    .venv/bin/python bench/profile.py [--workload "PUT overwrite"] [--backend memory]
        [--seconds 9] [--top 25] [--watchers N]

kv serves on CPU 0 (bench/processes.py), wrk loads it from CPU 1 with the workload of
bench/workloads.py, and py-spy samples kv at 200 Hz from CPU 1 meanwhile. The folded
stacks are kept in bench/results/profile-<backend>-<workload>.folded (for flamegraph tools);
printed: the share of samples per function, in the function itself and in it or what it
called. Time in C (the socket writes, uvloop, orjson) counts to the Python function that
called it.

`--watchers N`: N SSE watchers (bench/watchers.py, on the load CPU) read the prefix `w/`
while wrk PUTs round its 100 keys, as in bench/new_ops.py; `--workload` is then ignored.
"""

import argparse
import collections
import contextlib
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from load import wrk
from new_ops import put_watched, watching
from processes import LOAD_CPU, ROOT, backend_server, serve
from workloads import BY_NAME

SAMPLES_PER_SECOND = 200
PY_SPY = Path(sys.executable).parent / "py-spy"  # installed by make bench


def frame_name(frame: str) -> str:
    """'function (path/to/module.py:line)' as 'function (package/module.py)'."""
    match = re.fullmatch(r"(.*) \((.*?)(?::\d+)?\)", frame)
    if match is None:
        return frame
    function, where = match.groups()
    return f"{function} ({re.sub(r'.*/(site-packages|src|lib/python3[.0-9]*)/', '', where)})"


def summarise(folded: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, samples = line.rsplit(" ", 1)
        names = [frame_name(frame) for frame in stack.split(";")]
        total += int(samples)
        own[names[-1]] += int(samples)
        for name in set(names):
            inclusive[name] += int(samples)
    print(f"{total} samples")
    for title, counter in (("own time", own), ("inclusive", inclusive)):
        print(f"\n{title}:")
        for name, count in counter.most_common(top):
            print(f"  {100 * count / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", default="PUT overwrite", choices=sorted(BY_NAME))
    parser.add_argument("--backend", default="memory", choices=["memory", "tarantool", "redis"])
    parser.add_argument("--seconds", type=int, default=9)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--watchers", type=int, default=None)
    args = parser.parse_args()
    workload = BY_NAME[args.workload]
    if args.watchers is not None:
        workload = put_watched()
        args.workload = f"PUT with {args.watchers} watchers"
    slug = re.sub(r"\W+", "-", f"{args.backend} {args.workload}").lower()
    folded = ROOT / "bench" / "results" / f"profile-{slug}.folded"
    with (
        tempfile.TemporaryDirectory() as tmp,
        backend_server(args.backend, Path(tmp)) as backend,
        serve("kv", backend, Path(tmp)) as server,
        contextlib.ExitStack() as stack,
    ):
        if args.watchers is not None:
            stack.enter_context(watching(server, args.watchers))
        # wrk runs a second longer on each side than py-spy samples.
        loader = threading.Thread(
            target=wrk, args=(server.url, workload, args.seconds + 2, Path(tmp))
        )
        loader.start()
        subprocess.run(
            ["taskset", "-c", LOAD_CPU, str(PY_SPY), "record", "--pid", str(server.process.pid),
             "--duration", str(args.seconds), "--rate", str(SAMPLES_PER_SECOND),
             "--format", "raw", "--output", str(folded)],
            check=True, capture_output=True,
        )  # fmt: skip
        loader.join()
    print(f"{args.backend}, {args.workload}: {folded.relative_to(ROOT)}")
    summarise(folded, args.top)


if __name__ == "__main__":
    main()
