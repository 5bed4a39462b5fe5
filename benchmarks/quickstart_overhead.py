"""The quickstart's fixed overhead: the wall time of `telebench run suites/quickstart.yaml` beyond the
work its trials measure, and how much of the run the garbage collector took.

    python benchmarks/quickstart_overhead.py                      # three whole runs
    python benchmarks/quickstart_overhead.py --repeat 5
    python benchmarks/quickstart_overhead.py --vs /tmp/old        # interleaved with a checkout's telebench/

Each run is a fresh process, timed from outside (wall). From its results it sums the trials'
``train_clock_s``, ``eval_clock_s`` and ``teleport_clock_s``; the fixed overhead is the wall time minus
all three (interpreter and imports, per-pair set-up, journal, summary, report, exit), and the wider
figure the wall time minus the training clock alone. The process counts its collections with
``gc.callbacks`` and reports the seconds they took. On a shared machine the training time moves
between runs, and the share with it: compare runs interleaved (``--vs``), not across sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs the CLI with the collector instrumented; writes {generation: [count, seconds]} at exit.
BOOT = """
import atexit, gc, json, sys, time
stats = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
started = [0.0]
def count(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        stats[info["generation"]][0] += 1
        stats[info["generation"]][1] += time.perf_counter() - started[0]
gc.callbacks.append(count)
out, gc_file = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(gc_file, "w").write(json.dumps(stats)))
sys.argv = ["telebench", "run", sys.argv[3], "--out", out]
from telebench.cli import main
main()
"""


@dataclass(frozen=True)
class Run:
    """One whole run: its wall time, the Σ of its trials' clocks, and the collector's seconds."""

    label: str
    wall: float
    train: float
    work: float  # evaluation and teleports
    gc: float
    full: int  # full (generation 2) collections

    @property
    def fixed(self) -> float:
        return self.wall - self.train - self.work


def one_run(label: str, package_root: Path) -> Run:
    """One whole run of the quickstart with the telebench package found in ``package_root`` (put first
    on PYTHONPATH; the process runs in a fresh folder, so the current one cannot shadow it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, gc_file = Path(tmp) / "run", Path(tmp) / "gc.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", BOOT, str(out), str(gc_file), str(ROOT / "suites" / "quickstart.yaml")],
                       cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        trials = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
        gc_stats = json.loads(gc_file.read_text())
    return Run(label, wall, train=sum(t["train_clock_s"] for t in trials),
               work=sum(t["eval_clock_s"] + t["teleport_clock_s"] for t in trials),
               gc=sum(s[1] for s in gc_stats.values()), full=gc_stats["2"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vs", help="a folder holding another telebench/ package (e.g. `git archive REV telebench | "
                        "tar -x -C FOLDER`), run interleaved as 'other'")
    args = parser.parse_args()
    variants = [("this", ROOT)] + ([("other", Path(args.vs).resolve())] if args.vs else [])
    runs: list[Run] = []
    print(f"{'':6s} {'wall':>7s} {'train':>7s} {'eval+tp':>7s} {'fixed':>14s} {'wall-train':>14s} {'gc':>6s} full")
    for _ in range(args.repeat):
        for label, path in variants:
            r = one_run(label, path)
            runs.append(r)
            print(f"{label:6s} {r.wall:6.2f}s {r.train:6.2f}s {r.work:6.2f}s {r.fixed:6.2f}s ({r.fixed / r.wall:5.1%}) "
                  f"{r.wall - r.train:6.2f}s ({(r.wall - r.train) / r.wall:5.1%}) {r.gc:5.2f}s {r.full}")
    for label, _ in variants:
        mine = [r for r in runs if r.label == label]
        print(f"{label}: median fixed share {statistics.median(r.fixed / r.wall for r in mine):.1%}, "
              f"median collector time {statistics.median(r.gc for r in mine):.2f} s")


if __name__ == "__main__":
    main()
