"""Signals with the process executor, on a real `telebench run` in a subprocess.

SIGTERM stops a run as Ctrl-C does: every unit the journal holds is in results.json, and no worker
process outlives the run. SIGKILL gives the run no chance to clean up, so the workers must die with
their parent by themselves (Linux `PR_SET_PDEATHSIG`), instead of training on under PID 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and relies on PR_SET_PDEATHSIG"),
]

# One quick case, whose pair finishes in a second, and one that would train for many minutes.
SUITE = textwrap.dedent("""\
    name: signals
    defaults:
      eval_every: 10
      target: {metric: train_loss, value: 0.5}
      arms: [baseline, teleport]
      dataset: {name: digits}
      model: {widths: [64, 8, 10], activation: relu}
      optimizers: [{name: sgd, lr: 0.1}]
    cases:
      - {name: quick, budget: {steps: 20}}
      - {name: slow, budget: {steps: 50000000}, eval_every: 1000000}
""")


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of `pid`, as pid -> its start time (so a reused pid is not mistaken for it)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found and (start := _start_time(child)) is not None:
                    found[child] = start
                    todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    """The process's start time, or None when it is gone or a zombie (dead, waiting to be reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def survivors(processes: dict[int, str], wait_s: float) -> list[int]:
    deadline = time.monotonic() + wait_s
    while True:
        alive = [pid for pid, start in processes.items() if _start_time(pid) == start]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def start_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, dict[int, str]]:
    """`telebench run` with two process workers; returns once the quick pair is journaled and the slow
    pair is training, with the run's worker processes."""
    suite = tmp_path / "signals.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "telebench", "run", str(suite), "--out", str(out), "--executor", "process",
         "--jobs", "2", "--allow-shared-device", "--threads", "1", "--no-report"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    journal = out / "results.jsonl"
    deadline = time.monotonic() + 240
    workers: dict[int, str] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        workers.update(descendants(proc.pid))
        if journal.exists() and journal.read_text().count("\n") >= 2 and len(workers) >= 2:
            time.sleep(1.0)  # the slow pair is under way in the other worker
            workers.update(descendants(proc.pid))
            return proc, out, workers
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the run did not journal its quick pair in time:\n{proc.communicate()[0]}")


def test_sigterm_keeps_every_journaled_unit_and_leaves_no_worker_behind(tmp_path: Path) -> None:
    proc, out, workers = start_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, output
    assert "Interrupted:" in output and "Traceback" not in output
    assert survivors(workers, wait_s=10) == []
    journaled = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]
    results = json.loads((out / "results.json").read_text())
    assert results["partial"] is True and len(journaled) >= 2
    assert {r["id"] for r in journaled} <= {t["id"] for t in results["trials"]}


def test_workers_die_with_a_parent_killed_outright(tmp_path: Path) -> None:
    proc, _, workers = start_run(tmp_path)
    proc.kill()  # SIGKILL: no handler runs, the pool is never shut down
    proc.communicate(timeout=60)
    assert survivors(workers, wait_s=15) == []
