"""Parallel executors: the same numbers as the local executor, honest device sharing, crash and
Ctrl-C handling, and resume across executors. Real worker processes and a real local Ray cluster."""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from rich.progress import Progress

from telebench.analysis.summary import COMPARISON_FIELDS
from telebench.errors import UserError
from telebench.execution.base import WorkerStatus
from telebench.execution.board import WorkerBoard, describe
from telebench.execution.process import ProcessExecutor
from telebench.execution.registry import EXECUTORS, get_executor
from telebench.experiments.base import RunOutcome, RunRequest
from telebench.experiments.pairs.experiment import EXPERIMENT
from telebench.experiments.pairs.plan import Plan, group_pairs
from telebench.experiments.pairs.spec import BudgetSpec, ScheduleSpec, TargetSpec, TeleportSpec, TrialSpec
from telebench.experiments.pairs.task import run_pair
from telebench.experiments.runner import run_experiment
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec

TELEPORT = TeleportSpec(group="rescale", steps=3, lr=1e-2, batch_size=64, schedule=ScheduleSpec("at_steps", steps=(0, 10)))
# Summary fields built from clocks: the primary metric (time to target) is copied to the top of every row.
# Everything the training clock decides (the primary metric is time to target): values, verdicts, and
# Holm's family size and wording, which count the rows whose time comparison has a p-value.
TIMING_KEYS = {"time_to_target_s", "teleport_overhead", "speedup_time", "verdict", "spread", "seeds_needed",
               "seeds_needed_holm", "holm_m", "correction", *COMPARISON_FIELDS}


def trial(arm: str, seed: int, steps: int = 30, kind: str | None = None, teleport: TeleportSpec | None = TELEPORT) -> TrialSpec:
    kind = kind or arm
    return TrialSpec(
        suite="executors",
        case="digits-mlp",
        arm=arm,
        arm_kind=kind,
        dataset=DatasetSpec("digits"),
        model=ModelSpec((64, 16, 10), "relu"),
        optimizer=OptimizerSpec("sgd", 0.1),
        optimizer_label="sgd",
        teleport=None if kind == "baseline" else teleport,
        device="cpu",
        seed=seed,
        batch_size=32,
        budget=BudgetSpec("steps", steps),
        eval_every=max(10, steps // 3),
        target=TargetSpec(),
    )


def mixed_plan() -> list[TrialSpec]:
    """Three seeds of baseline, reset-only and teleport, plus an arm that raises in its worker:
    the `linear` group does not act on a ReLU net, so teleport() raises SymmetryError at step 0."""
    broken = replace(TELEPORT, group="linear")
    return [
        spec
        for seed in range(3)
        for spec in (
            trial("baseline", seed),
            trial("reset-only", seed),
            trial("teleport", seed),
            trial("teleport-linear", seed, kind="teleport", teleport=broken),
        )
    ]


def run(plan: list[TrialSpec], out: Path, executor: str, **options: Any) -> RunOutcome:
    console = Console(file=io.StringIO(), width=200)
    request = RunRequest(out_dir=out, executor=executor, report=False, **options)
    return run_experiment(EXPERIMENT, Plan("executors", plan, source=Path("<test>")), request, console)


def histories(results: dict[str, Any]) -> dict[str, tuple]:
    return {
        t["id"]: (t["status"], [(h["step"], h["train_loss"], h["val_loss"], h["val_accuracy"]) for h in t["history"]])
        for t in results["trials"]
    }


def untimed_summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in results["summary"]]


def intervals_overlap(trials: list[dict[str, Any]]) -> bool:
    spans = sorted({(t["timing"]["pair_started_unix"], t["timing"]["pair_finished_unix"]) for t in trials})
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


@pytest.fixture(scope="module")
def one_thread():
    """Thread count changes float reduction order, so every executor runs pairs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_results(tmp_path_factory, one_thread) -> dict[str, Any]:
    return run(mixed_plan(), tmp_path_factory.mktemp("local"), "local").results


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'telebench[ray]'); the ray executor is untested")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def check_mixed(results: dict[str, Any], local: dict[str, Any]) -> None:
    assert histories(results) == histories(local)
    assert untimed_summary(results) == untimed_summary(local)
    by_arm: dict[str, set[str]] = {}
    for t in results["trials"]:
        by_arm.setdefault(t["arm"], set()).add(t["status"])
    assert by_arm == {"baseline": {"ok"}, "reset-only": {"ok"}, "teleport": {"ok"}, "teleport-linear": {"error"}}
    assert all("SymmetryError" in t["message"] for t in results["trials"] if t["status"] == "error")


# ---- the same numbers everywhere ----------------------------------------------------------------
def test_registry_has_all_three_executors() -> None:
    assert set(EXECUTORS) == {"local", "process", "ray"}


@pytest.mark.slow
def test_process_pool_matches_local_trial_for_trial(tmp_path, local_results) -> None:
    outcome = run(mixed_plan(), tmp_path, "process", jobs=2, allow_shared_device=True, threads=1)
    check_mixed(outcome.results, local_results)
    trials = outcome.results["trials"]
    assert all(t["timing"]["shared_device"] and t["timing"]["threads"] == 1 for t in trials)
    assert all(t["executor"] == "process" and t["worker"] != os.getpid() for t in trials)
    assert all(t["environment"]["threads"] == 1 for t in trials)


@pytest.mark.slow
def test_ray_matches_local_and_keeps_timed_pairs_apart(tmp_path, local_results, ray_cluster) -> None:
    shared = run(mixed_plan(), tmp_path / "shared", "ray", allow_shared_device=True, threads=1).results
    check_mixed(shared, local_results)
    assert all(t["timing"]["shared_device"] for t in shared["trials"])

    timed = run(mixed_plan(), tmp_path / "timed", "ray", threads=1).results
    check_mixed(timed, local_results)
    node = ray_cluster.get_runtime_context().get_node_id()
    for t in timed["trials"]:
        assert t["node"] == node and t["host"] == t["environment"]["hostname"]
        assert t["timing"]["shared_device"] is False
    assert not intervals_overlap(timed["trials"])  # one node, so its CPU ran one timed pair at a time


# ---- device sharing -----------------------------------------------------------------------------
def test_timed_pairs_on_one_device_get_one_worker_unless_sharing_is_allowed() -> None:
    cpu_pairs = group_pairs([trial("baseline", s) for s in range(4)])
    assert ProcessExecutor(run_pair, jobs=2).workers_for(cpu_pairs) == 1
    assert ProcessExecutor(run_pair, jobs=2, allow_shared_device=True).workers_for(cpu_pairs) == 2
    assert ProcessExecutor(run_pair, jobs=2, timed=False).workers_for(cpu_pairs) == 2
    two_devices = cpu_pairs + group_pairs([replace(trial("baseline", 9), device="cuda")])
    assert ProcessExecutor(run_pair, jobs=4).workers_for(two_devices) == 2


# ---- faults ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_dead_worker_is_retried_once_alone_then_recorded_as_error(one_thread) -> None:
    """SIGKILL the worker as it starts a pair: seed 0 dies on both attempts, seed 1 once, seed 2 never."""
    plan = [trial(arm, seed, steps=2000 if seed < 2 else 30) for seed in range(3) for arm in ("baseline", "reset-only")]
    kills_left = {0: 2, 1: 1}
    records: list[dict[str, Any]] = []
    shown: dict[str, float] = {}

    def on_worker(status: WorkerStatus) -> None:
        if status.running and kills_left.get(status.running[0].seed, 0) > 0:
            kills_left[status.running[0].seed] -= 1
            os.kill(status.pid, signal.SIGKILL)

    def on_progress(spec: TrialSpec, delta: float) -> None:
        shown[spec.id] = shown.get(spec.id, 0.0) + delta

    ProcessExecutor(run_pair, jobs=2, threads=1).run(group_pairs(plan), records.append, on_progress, on_worker)
    by_seed = {s: [r for r in records if r["seed"] == s] for s in range(3)}
    assert [r["status"] for r in by_seed[0]] == ["error", "error"]
    assert all("worker process died on both attempts" in r["message"] for r in by_seed[0])
    assert [(r["status"], r["attempt"]) for r in by_seed[1]] == [("ok", 2), ("ok", 2)]
    assert [(r["status"], r["attempt"]) for r in by_seed[2]] == [("ok", 1), ("ok", 1)]
    assert shown == pytest.approx(dict.fromkeys((s.id for s in plan), 1.0))
    assert kills_left == {0: 0, 1: 0}
    assert not multiprocessing.active_children()


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_any_executor_resumes(tmp_path, one_thread) -> None:
    plan = [trial(arm, seed, steps=30 if seed == 0 else 2000) for seed in range(3) for arm in ("baseline", "reset-only")]
    log = tmp_path / "results.jsonl"
    armed = threading.Event()

    def interrupt_when_first_pair_is_logged() -> None:
        while armed.is_set():
            if log.exists() and log.read_text().count("\n") >= 2:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    def on_sigint(signum: int, frame: Any) -> None:
        if armed.is_set():  # never let a late signal escape into pytest
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    armed.set()
    watcher = threading.Thread(target=interrupt_when_first_pair_is_logged)
    watcher.start()
    try:
        first = run(plan, tmp_path, "process", jobs=2, threads=1)
    finally:
        armed.clear()
        watcher.join()
        signal.signal(signal.SIGINT, previous)

    kept = [line for line in log.read_text().splitlines() if line]
    assert first.interrupted and 2 <= len(kept) < len(plan)
    assert first.results["partial"] is True
    assert {json.loads(line)["id"] for line in kept} <= {t["id"] for t in first.results["trials"]}  # none lost
    assert not multiprocessing.active_children()  # running pairs were cancelled, not awaited

    second = run(plan, tmp_path, "local")
    assert (second.skipped, second.ran) == (len(kept), len(plan) - len(kept))
    assert not second.results["partial"]
    assert {t["id"] for t in second.results["trials"]} == {s.id for s in plan}


def test_worker_board_keeps_one_row_per_worker() -> None:
    progress = Progress(disable=True)
    board = WorkerBoard(progress)
    pair = tuple(group_pairs([trial("baseline", 3), trial("reset-only", 3)])[0])
    board.update(WorkerStatus("node-a", 11, running=pair))
    board.update(WorkerStatus("node-b", 12))
    board.update(WorkerStatus("node-a", 11, finished=2))
    rows = {task.description: task.completed for task in progress.tasks}
    assert rows == {"  node-a:11: [dim]idle[/]": 2, "  node-b:12: [dim]idle[/]": 0}
    assert describe(WorkerStatus("node-a", 11, running=pair)).startswith("  node-a:11: digits-mlp · sgd · seed 3 (2 arms)")


# ---- bad options ----------------------------------------------------------------------------------
def test_ray_missing_is_one_sentence_with_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as without Ray
    with pytest.raises(UserError, match=r"pip install 'telebench\[ray\]'"):
        get_executor("ray", run_pair)


def test_a_ray_address_where_nothing_listens_fails_fast() -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'telebench[ray]')")
    with pytest.raises(UserError, match="nothing answers there"):
        get_executor("ray", run_pair, address="127.0.0.1:1")
    with pytest.raises(UserError, match="neither auto nor HOST:PORT"):
        get_executor("ray", run_pair, address="head-node")


def test_ray_auto_pointing_nowhere_fails_fast(monkeypatch) -> None:
    """`auto` means RAY_ADDRESS (or the last `ray start`): a stale one is probed, not retried for minutes."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'telebench[ray]')")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(UserError, match=r"--address auto: nothing answers at \S+:1 \(.*RAY_ADDRESS"):
        get_executor("ray", run_pair, address="auto")
    assert time.monotonic() - started < 10


def test_a_local_ray_cluster_without_a_network_fails_fast(monkeypatch) -> None:
    """Without a working loopback Ray retries 127.0.0.1 for a quarter of an hour; refuse before ray.init."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'telebench[ray]')")
    import socket as real_socket

    from telebench.execution import ray_executor

    class NoNetwork(real_socket.socket):
        def bind(self, address: Any) -> None:
            raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

    monkeypatch.setattr(ray_executor.socket, "socket", NoNetwork)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    with pytest.raises(UserError, match=r"cannot reach itself at 127\.0\.0\.1 \(Network is unreachable\)"):
        get_executor("ray", run_pair)


@pytest.mark.skipif(subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0
                    if shutil.which("unshare") else True, reason="needs `unshare -n` (a network namespace)")
def test_ray_in_a_network_namespace_without_a_network_gives_one_sentence() -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'telebench[ray]')")
    code = ("from telebench.execution.registry import get_executor\n"
            "from telebench.experiments.pairs.task import run_pair\n"
            "get_executor('ray', run_pair)\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", "from telebench.cli import main; import sys; "
                           f"sys.argv = ['telebench']; exec({code!r})"], capture_output=True, text=True,
                          timeout=120, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert "UserError: --executor ray: this machine cannot reach itself at 127.0.0.1" in proc.stderr


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("local", {"jobs": 2}, "--jobs does not apply to --executor local"),
        ("process", {"jobs": 0}, "at least 1"),
        ("threads", {}, "is unknown"),
    ],
)
def test_bad_executor_options_are_user_errors(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        get_executor(name, run_pair, **options)


def test_unset_cli_flags_are_ignored_by_executors_that_do_not_take_them() -> None:
    executor = get_executor("local", run_pair, jobs=None, address=None, allow_shared_device=False)
    assert executor.name == "local"


@pytest.mark.parametrize(
    ("named", "jobs", "expected"),
    [
        (None, None, ("local", None)),
        (None, 1, ("local", None)),
        (None, 2, ("process", 2)),
        ("local", 2, ("local", 2)),  # named local with --jobs 2 is still refused by get_executor
        ("process", None, ("process", None)),
        ("ray", 3, ("ray", 3)),
    ],
)
def test_jobs_alone_chooses_a_process_pool(named: str | None, jobs: int | None,
                                           expected: tuple[str, int | None]) -> None:
    from telebench.experiments.runner import executor_choice
    assert executor_choice(named, jobs) == expected
