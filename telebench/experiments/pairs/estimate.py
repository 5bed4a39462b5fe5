"""How long a plan takes, for `telebench list`: a short measured probe, scaled by the plan's steps.

The probe runs the work a trial repeats, with the functions the training loop uses, on this machine:
a few training steps of each distinct (dataset, model, batch, optimizer, device), one evaluation, the
set-up of an arm, and one teleport per distinct teleport config (after an untimed one when that is
cheap). It trains on random stand-in tensors of the dataset's shape and sizes (from the registry, so
no file is read and a cost depends on shapes alone), runs once per `list`, off any clock, on one torch
thread as `run` does, and times CPU work by the process's CPU clock (CUDA work by the wall clock after
a synchronise), so a busy machine does not inflate it. Each trial's estimate is then

    pair set-up / arms of the pair + arm set-up + steps × step + teleports × (teleport + 2 held-out
    losses) + evaluations × evaluation + the final test evaluation

plus, once per plan, what the first calls cost beyond the later ones (torch.optim's and the symmetry
code's imports, lazy initialisation), and, when the estimate runs in the telebench command line, that
process's own start-up (Python, torch, telebench, the suite), which a run pays once too. Reading the
dataset files (and importing their loaders: scikit-learn for digits) is not counted. Where probing is impossible (a CUDA device absent here, a dataset the registry cannot size,
the probe's time limit spent, unless another optimizer's step on the same model was measured and is
reused) a trial falls back to the static figures below, and the estimate says so. Those constants were fitted on a 2-core CPU with torch 2.14 (fwd+bwd+Adam step, MLPs from 64-32-10
at batch 32 to 3072-128-32-10 at batch 200, within 15 %), ignore per-process costs and are good to
about ±3×; CUDA trials get the same static estimate, which overstates them.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from telebench.config import registry
from telebench.experiments.pairs.spec import TELEPORTING_ARMS, ScheduleSpec, TeleportSpec, TrialSpec
from telebench.experiments.pairs.stand_in import StandIn, build_stand_in
from telebench.training.evaluation import TRAIN_EVAL_SIZE
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec, thaw
from telebench.training.step import budget_steps

if TYPE_CHECKING:
    import torch

    from telebench.training.dataset_bundle import DatasetBundle

STEP_OVERHEAD_S = 250e-6  # per training step: Python, optimizer bookkeeping, batch slicing
STEP_COST_S = 0.025e-9  # per sample per parameter: forward + backward + step
FORWARD_OVERHEAD_S = 15e-6  # per evaluation chunk
FORWARD_COST_S = 0.009e-9  # per sample per parameter, forward only
TRIAL_SETUP_S = 0.05  # building the model, optimizer, first batches
HELD_OUT_SIZE = 2_000  # samples of each teleport's invariance check
GRADS_PER_TELEPORT_STEP = {"gl-data": 4.0}  # gradient evaluations per search step; other groups: 1
UNKNOWN_TRAIN_SIZE = 1_000

PROBE_WARMUP_STEPS = 3  # untimed, as the loop's own warm-up
PROBE_MIN_STEPS = 2
PROBE_MAX_STEPS = 200  # per block
PROBE_BLOCKS = 3
PROBE_STEP_SECONDS = 0.03  # time steps for about this long per (model, batch, optimizer)
PROBE_BUDGET_S = 10.0  # a plan of many distinct models probes this long, then estimates the rest statically
CHEAP_TELEPORT_S = 0.25  # a first teleport faster than this is repeated, and the warm second one kept

T = TypeVar("T")
CostKey = tuple[DatasetSpec, ModelSpec, int, OptimizerSpec, str, int]
TeleportKey = tuple[DatasetSpec, ModelSpec, str, TeleportSpec, str]


@dataclass(frozen=True)
class Costs:
    """Seconds of the pieces of work one trial repeats, for one (dataset, model, batch, optimizer, device)."""

    step_s: float  # one training step
    eval_s: float  # one history row: train loss on the train subset, loss and accuracy on validation
    held_out_s: float  # one held-out loss (each teleport takes two)
    pair_s: float = 0.0  # once per pair: loading the data, the template model, the warm-up
    arm_s: float = TRIAL_SETUP_S  # once per arm: its model, optimizer and batch streams
    test_s: float = 0.0  # the final test evaluation


@dataclass
class Probed:
    """What one probe measured: costs by key, teleport seconds by key, and why any key could not be probed."""

    costs: dict[CostKey, Costs] = field(default_factory=dict)
    teleports: dict[TeleportKey, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # case name → the reason it was not probed
    once_s: float = 0.0  # one-off costs a process pays once (first optimizer, first teleport, imports)
    seconds: float = 0.0  # the probe's own wall time


@dataclass(frozen=True)
class Estimate:
    """A plan's estimated seconds, run one trial at a time."""

    seconds: float
    trials: int
    probed_trials: int  # trials estimated from the probe; the rest from the static figures
    failed: dict[str, str] = field(default_factory=dict)  # case name → why it fell back
    probe_seconds: float = 0.0

    @property
    def probed(self) -> bool:
        return self.trials > 0 and self.probed_trials == self.trials


# ---- the formula -----------------------------------------------------------------------------------
def _n_params(spec: TrialSpec) -> int:
    if spec.model.is_mlp:
        return sum(a * b + (b if spec.model.bias else 0) for a, b in pairwise(spec.model.widths))
    from telebench.experiments.pairs.models import model_info

    return model_info(spec.model, spec.dataset).parameters


def _split_sizes(spec: TrialSpec) -> tuple[int, int]:
    sizes = registry.dataset_sizes(spec.dataset.name, thaw(spec.dataset.params))
    return (sizes[0], sizes[1]) if sizes else (UNKNOWN_TRAIN_SIZE, UNKNOWN_TRAIN_SIZE // 4)


def _teleport_count(schedule: ScheduleSpec, steps_per_epoch: int, total_steps: int) -> int:
    if schedule.kind == "at_steps":
        steps: Iterable[int] = schedule.steps
    elif schedule.kind == "at_epochs":
        steps = (e * steps_per_epoch for e in schedule.epochs)
    elif schedule.kind == "every":
        return len(range(schedule.start, total_steps, max(1, schedule.every)))
    else:
        steps = (e * steps_per_epoch + i for e in schedule.epochs for i in range(schedule.count))
    return sum(1 for s in set(steps) if 0 <= s < total_steps)


def static_costs(spec: TrialSpec) -> Costs:
    """The fitted per-sample-per-parameter figures: no measurement."""
    params = _n_params(spec)
    n_train, n_val = _split_sizes(spec)
    n_eval = min(n_train, TRAIN_EVAL_SIZE)
    chunks = math.ceil(n_eval / spec.eval_batch_size) + math.ceil(n_val / spec.eval_batch_size)
    return Costs(
        step_s=STEP_OVERHEAD_S + STEP_COST_S * spec.batch_size * params,
        eval_s=chunks * FORWARD_OVERHEAD_S + FORWARD_COST_S * (n_eval + n_val) * params,
        held_out_s=FORWARD_OVERHEAD_S + FORWARD_COST_S * min(HELD_OUT_SIZE, n_val) * params,
    )


def static_teleport_seconds(spec: TrialSpec) -> float:
    """One teleport by the fitted figures: its gradient evaluations on the teleport batch."""
    tp = spec.teleport
    if tp is None:
        return 0.0
    params = _n_params(spec)
    grads = 2.0 if spec.arm_kind == "random-teleport" else 1 + tp.steps * GRADS_PER_TELEPORT_STEP.get(tp.group, 1.0)
    return grads * (STEP_OVERHEAD_S + STEP_COST_S * tp.batch_size * params)


def trial_seconds(spec: TrialSpec, costs: Costs | None = None, teleport_s: float | None = None,
                  arms: int = 1) -> float:
    """Estimated seconds of one trial from `costs` (default: the static figures) and one teleport's
    seconds (default: static); `arms` trials of its pair share the pair's set-up."""
    costs = costs or static_costs(spec)
    n_train, _ = _split_sizes(spec)
    steps_per_epoch = max(1, n_train // spec.batch_size)  # BatchStream drops the last partial batch
    if spec.budget.kind == "seconds":
        steps = int(spec.budget.value / max(costs.step_s, 1e-9))
    else:
        steps = budget_steps(spec.budget.kind, spec.budget.value, steps_per_epoch)
    teleports_s = 0.0
    if spec.teleport is not None and spec.arm_kind in TELEPORTING_ARMS:
        one = teleport_s if teleport_s is not None else static_teleport_seconds(spec)
        count = _teleport_count(spec.teleport.schedule, steps_per_epoch, steps)
        teleports_s = count * (one + 2 * costs.held_out_s)
    evals = math.ceil(steps / max(1, spec.eval_every)) + 1
    return (costs.pair_s / max(1, arms) + costs.arm_s + steps * costs.step_s + teleports_s
            + evals * costs.eval_s + costs.test_s)


def estimate_seconds(plan: Iterable[TrialSpec]) -> float:
    """Estimated seconds of a whole plan run one trial at a time, from the static figures alone."""
    return sum(trial_seconds(spec) for spec in plan)


def estimate_plan(plan: Sequence[TrialSpec], *, probe: bool = True, startup_s: float | None = None) -> Estimate:
    """The plan's seconds from a measured probe (`probe=False`, or where probing fails: static figures),
    plus, once probed, the process's start-up (`startup_s`; default: `cli_startup_seconds()`)."""
    probed = probe_plan(plan) if probe and plan else Probed()
    startup = cli_startup_seconds() if startup_s is None else startup_s
    arms = Counter(spec.pair_key for spec in plan)
    total, measured = 0.0, 0
    for spec in plan:
        static = spec.case in probed.failed
        costs = None if static else probed.costs.get(cost_key(spec))
        tele = None if static or spec.teleport is None else probed.teleports.get(teleport_key(spec))
        if costs is not None:
            measured += 1
        total += trial_seconds(spec, costs, tele, arms[spec.pair_key])
    if measured:
        total += probed.once_s + startup
    return Estimate(total, len(plan), measured, dict(probed.failed), probed.seconds)


def cli_startup_seconds() -> float:
    """The CPU seconds this process spent before now when it is the telebench command line (starting
    Python, importing torch and telebench, reading the suite: what `telebench run` spends before its
    first trial too); 0 in any other process, whose past CPU says nothing about a run."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", None) == "telebench.__main__" or Path(sys.argv[0] if sys.argv else "").name == "telebench":
        return time.process_time()
    return 0.0


# ---- the probe -------------------------------------------------------------------------------------
def cost_key(spec: TrialSpec) -> CostKey:
    return (spec.dataset, spec.model, spec.batch_size, spec.optimizer, spec.device, spec.eval_batch_size)


def teleport_key(spec: TrialSpec) -> TeleportKey:
    """The teleport's own work: not when it happens (the schedule scales it), nor the arm's optimizer, nor how
    long an lr-bump's scaling lasts."""
    assert spec.teleport is not None
    tp = replace(spec.teleport, schedule=ScheduleSpec(kind="at_steps", steps=(0,)), bump_steps=0)
    return (spec.dataset, spec.model, spec.device, tp, "random" if spec.arm_kind == "random-teleport" else "optimize")


def probe_plan(plan: Sequence[TrialSpec]) -> Probed:
    """Measure every distinct piece of work of `plan` once, on one torch thread; see the module doc."""
    import torch

    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what `run` uses for train suites
    probe = _Probe(started)
    try:
        for spec in plan:
            probe.add(spec)
    finally:
        torch.set_num_threads(threads)
    probe.result.seconds = time.perf_counter() - started
    return probe.result


class _Probe:
    def __init__(self, started: float) -> None:
        self.deadline = started + PROBE_BUDGET_S
        self.result = Probed()
        self.stand_ins: dict[tuple[DatasetSpec, str, str], StandIn] = {}

    def add(self, spec: TrialSpec) -> None:
        """Probe what `spec` needs that is not yet measured; a failure marks its case as static."""
        if spec.case in self.result.failed:
            return
        if spec.device.startswith("cuda") and not _cuda_available():
            self.result.failed[spec.case] = "no CUDA device on this machine"
            return
        if time.perf_counter() > self.deadline and self.result.costs and cost_key(spec) not in self.result.costs:
            key = cost_key(spec)  # out of time: another optimizer's step on the same model is close enough
            sibling = next((c for k, c in self.result.costs.items() if k[:3] == key[:3] and k[4:] == key[4:]), None)
            if sibling is None:
                self.result.failed[spec.case] = f"the probe's {PROBE_BUDGET_S:g} s were spent on other work"
                return
            self.result.costs[key] = sibling
        try:
            key = cost_key(spec)
            if key not in self.result.costs:
                self.result.costs[key] = self._costs(spec)
            if spec.teleport is not None and spec.arm_kind in TELEPORTING_ARMS:
                tkey = teleport_key(spec)
                if tkey not in self.result.teleports:
                    self.result.teleports[tkey] = self._teleport(spec)
        except Exception as exc:  # noqa: BLE001 - any failure only means "estimate this case statically"
            self.result.failed[spec.case] = _reason(exc)

    def _stand_in(self, spec: TrialSpec) -> StandIn:
        """The dataset's stand-in (its shape, task and sizes from the registry, so no file is read)."""
        need = max(spec.batch_size, spec.teleport.batch_size if spec.teleport else 0)
        key = (spec.dataset, spec.device, spec.model.inputs)
        found = self.stand_ins.get(key)
        if found is not None and len(found.data.x_train) >= min(need, found.n_train):
            return found
        self.stand_ins[key] = build_stand_in(spec, need)
        return self.stand_ins[key]

    def _twice(self, fn: Callable[[], T], clock: Callable[[], float]) -> tuple[T, float]:
        """Call `fn` twice: its second result and seconds; what the first took beyond the second is
        one-off (imports, caches, lazy initialisation), paid once per process."""
        start = clock()
        fn()
        first = clock() - start
        start = clock()
        result = fn()
        second = clock() - start
        self.result.once_s += max(0.0, first - second)
        return result, second

    def _costs(self, spec: TrialSpec) -> Costs:
        from telebench.training.evaluation import evaluate, loss_fn_for

        stand_in = self._stand_in(spec)
        data = stand_in.data
        clock = _clock(data.x_train.device)
        (model, optimizer, stream), arm_s = self._twice(lambda: _arm(spec, data), clock)
        loss_fn = loss_fn_for(data.task)
        step_s = _step_seconds(model, optimizer, loss_fn, stream, clock)
        n_eval, n_ho = min(TRAIN_EVAL_SIZE, len(data.x_train)), min(HELD_OUT_SIZE, len(data.x_val))

        def timed_eval(x: torch.Tensor, y: torch.Tensor, split: int) -> float:
            seconds = _seconds(lambda: evaluate(model, x, y, data.task, spec.eval_batch_size), clock)
            return seconds * stand_in.scale(split, len(x))

        def held_out() -> None:
            with _no_grad():
                float(loss_fn(model(data.x_val[:n_ho]), data.y_val[:n_ho]))

        eval_s = timed_eval(data.x_train[:n_eval], data.y_train[:n_eval], 0) + timed_eval(data.x_val, data.y_val, 1)
        held_out_s = _seconds(held_out, clock) * min(HELD_OUT_SIZE, stand_in.rows[1]) / max(1, n_ho)
        test_s = 0.0
        if data.x_test is not None and data.y_test is not None:
            test_s = timed_eval(data.x_test, data.y_test, 2)
        pair_s = arm_s + PROBE_WARMUP_STEPS * step_s  # the template model and the loop's warm-up
        return Costs(step_s, eval_s, held_out_s, pair_s, arm_s, test_s)

    def _teleport(self, spec: TrialSpec) -> float:
        from telebench.symmetry import teleport
        from telebench.training.batches import BatchStream
        from telebench.training.evaluation import loss_fn_for

        assert spec.teleport is not None
        tp = spec.teleport
        data = self._stand_in(spec).data
        model, _, _ = _arm(spec, data)
        x, y = BatchStream(data.x_train, data.y_train, min(tp.batch_size, len(data.x_train)), seed=0).next()
        mode = "random" if spec.arm_kind == "random-teleport" else "optimize"
        clock = _clock(data.x_train.device)

        def one() -> None:
            teleport(model, x, y, loss_fn_for(data.task), mode=mode, **tp.search_options())

        first = _seconds(one, clock, repeat=1)
        if first >= CHEAP_TELEPORT_S:  # an expensive one is not repeated; its one-off part stays in it
            return first
        second = _seconds(one, clock, repeat=1)
        self.result.once_s += max(0.0, first - second)
        return second


def _arm(spec: TrialSpec, data: DatasetBundle) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """What the loop builds per arm: the model, its optimizer, and its two batch streams (the first returned)."""
    from telebench.training.batches import BatchStream
    from telebench.training.model_families import build_from_spec
    from telebench.training.optimizers import make_optimizer

    model = build_from_spec(spec.model, seed=spec.seed, device=data.x_train.device)
    optimizer = make_optimizer(spec.optimizer, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, spec.batch_size, seed=spec.seed)
    tele_bs = min(spec.teleport.batch_size if spec.teleport else spec.batch_size, len(data.x_train))
    BatchStream(data.x_train, data.y_train, tele_bs, seed=spec.seed + 1)
    return model, optimizer, stream


def _step_seconds(model: Any, optimizer: Any, loss_fn: Any, stream: Any, clock: Callable[[], float]) -> float:
    """Seconds per training step after the warm-up: the median of PROBE_BLOCKS blocks of steps, each at
    least PROBE_MIN_STEPS long and about PROBE_STEP_SECONDS / PROBE_BLOCKS (a burst of load on the
    machine then spoils one block, not the figure)."""
    from telebench.training.step import optimizer_step

    for _ in range(PROBE_WARMUP_STEPS):
        optimizer_step(model, optimizer, loss_fn, *stream.next())
    per_step = []
    for _ in range(PROBE_BLOCKS):
        start, n = clock(), 0
        while n < PROBE_MIN_STEPS or (n < PROBE_MAX_STEPS and clock() - start < PROBE_STEP_SECONDS / PROBE_BLOCKS):
            optimizer_step(model, optimizer, loss_fn, *stream.next())
            n += 1
        per_step.append((clock() - start) / n)
    return statistics.median(per_step)


def _seconds(fn: Callable[[], object], clock: Callable[[], float], repeat: int = 2) -> float:
    """The fastest of `repeat` calls (the first of two pays any one-off cost)."""
    best = math.inf
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def _clock(device: torch.device) -> Callable[[], float]:
    """CPU work: the process's CPU clock (load on the machine does not inflate it); CUDA: wall after a sync."""
    if device.type != "cuda":
        return time.process_time

    import torch

    def wall() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return wall


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _no_grad() -> Any:
    import torch

    return torch.no_grad()


def _reason(exc: BaseException) -> str:
    """The first sentence of a failure, for the list's title."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "…"
