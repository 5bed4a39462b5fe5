"""Plain-data trial specifications: the contract between the suite loader and every executor.

A TrialSpec holds only strings, numbers, booleans and tuples, so it is hashable, picklable
and serialisable; its hash lets a rerun skip trials that already finished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec, Params, thaw

ARMS = ("baseline", "teleport", "reset-only", "random-teleport", "lr-bump")
# Arms whose method runs `telebench.symmetry.teleport` (lr-bump on a copy of its model, to measure the
# gradient-norm factor it then scales the step size by): they need a group and an objective that fit.
TELEPORTING_ARMS = ("teleport", "random-teleport", "lr-bump")
BUDGET_KINDS = ("steps", "epochs", "seconds")
SCHEDULE_KINDS = ("at_steps", "at_epochs", "every", "first_minibatches")


@dataclass(frozen=True)
class ScheduleSpec:
    """When teleports happen. Steps count optimizer steps from 0; epochs count from 0."""

    kind: str  # one of SCHEDULE_KINDS
    steps: tuple[int, ...] = ()  # at_steps
    epochs: tuple[int, ...] = ()  # at_epochs (teleport on the first minibatch of each), first_minibatches
    every: int = 0  # every N steps (first at step `start`)
    count: int = 0  # first_minibatches: how many minibatches of each listed epoch
    start: int = 0  # every: first step


@dataclass(frozen=True)
class TeleportSpec:
    group: str = "rescale"  # rescale, linear, gl-data
    objective: str = "grad_norm"  # grad_norm, sharpness, curvature
    direction: str = "increase"  # increase | decrease
    steps: int = 10
    lr: float = 1e-2
    batch_size: int = 200
    parametrization: str = "exp"  # exp | linear (I + T with exact inverse)
    normalize_step: bool = False
    cap: float | None = None
    tolerance: float | None = None  # None: the group's default
    state_policy: str = "reset"  # one of STATE_POLICIES
    schedule: ScheduleSpec = field(default_factory=lambda: ScheduleSpec(kind="at_steps", steps=(0,)))
    objective_params: Params = ()
    bump_steps: int = 10  # lr-bump: optimizer steps its step-size scaling lasts (telebench/experiments/pairs/lr_bump.py)

    def search_options(self) -> dict[str, Any]:
        """The keyword arguments of `telebench.symmetry.teleport` that this spec fixes."""
        return {
            "group": self.group,
            "objective": self.objective,
            "direction": self.direction,
            "steps": self.steps,
            "lr": self.lr,
            "parametrization": self.parametrization,
            "normalize_step": self.normalize_step,
            "cap": self.cap,
            "tolerance": self.tolerance,
            "objective_kwargs": thaw(self.objective_params) or None,
        }


@dataclass(frozen=True)
class BudgetSpec:
    kind: str  # steps | epochs | seconds (training-clock seconds)
    value: float


@dataclass(frozen=True)
class TargetSpec:
    """Absolute: `value` on `metric`. baseline-final: the value the baseline reaches at the end
    of its budget (median over seeds), optionally relaxed by `slack` (relative)."""

    metric: str = "train_loss"  # train_loss | val_loss | val_accuracy
    kind: str = "baseline-final"  # absolute | baseline-final
    value: float | None = None
    slack: float = 0.0


@dataclass(frozen=True)
class PretrainSpec:
    """Train the pair's shared initial network, early-stopped on a holdout carved from the training split,
    before any arm starts (telebench/experiments/pairs/pretrain.py)."""

    patience: int = 3  # checks without a lower holdout loss before stopping
    max_epochs: int = 40
    holdout: int = 5000  # training samples set aside (the same for every seed and arm)
    every_epochs: int = 1  # epochs between holdout checks
    lr: float | None = None  # None: the pair's optimizer lr


ROLES = ("compared", "calibration", "tuning")  # tuning: a baseline at one grid lr (telebench/experiments/pairs/tuning.py)
# Fields a trial spec gained after results were first written: they enter the id only when set to
# something else than their default, so every trial of an older output folder keeps its id and resumes.
_HASHED_UNLESS_DEFAULT: dict[str, Any] = {"role": "compared", "pretrain": None}
_MODEL_HASHED_UNLESS_DEFAULT: dict[str, Any] = {"family": "mlp", "kwargs": (), "inputs": "flat"}
# Teleport settings added later; they enter the id only for the arm kind they apply to (bump_steps: lr-bump).
_TELEPORT_HASHED_UNLESS_DEFAULT: dict[str, tuple[Any, str]] = {"bump_steps": (10, "lr-bump")}


@dataclass(frozen=True)
class TrialSpec:
    suite: str
    case: str
    arm: str  # arm label, unique within a case (e.g. "teleport-keep")
    arm_kind: str  # one of ARMS: what the arm does
    dataset: DatasetSpec
    model: ModelSpec
    optimizer: OptimizerSpec
    optimizer_label: str  # unique label of the optimizer entry within its case (e.g. "adam" or "adam-lr1e-3")
    teleport: TeleportSpec | None  # None for baseline; reset-only keeps it for its schedule and policy
    device: str  # cpu | cuda | cuda:N
    seed: int
    batch_size: int
    budget: BudgetSpec
    eval_every: int  # steps between evaluations (off the clock)
    target: TargetSpec
    eval_batch_size: int = 1024
    role: str = "compared"  # or "calibration": a baseline run on a seed that is never compared, to set targets;
    # or "tuning": a baseline run on a calibration seed at one lr of a `tune_lr` grid, never compared
    pretrain: PretrainSpec | None = None  # early-stopped training of the shared initial network before the arms
    noun: ClassVar[str] = "arm"  # what executors call one unit of a pair

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["pretrain"] is None:  # added later: an unpretrained trial's record reads exactly as before
            del out["pretrain"]
        return out

    def label(self) -> str:
        if self.role == "tuning":
            return f"{self.case} · {self.optimizer_label} lr {self.optimizer.lr:g} · tuning · seed {self.seed}"
        return f"{self.case} · {self.optimizer_label} · {self.arm} · seed {self.seed}"

    def task_label(self) -> str:
        tuning = " · tuning" if self.role == "tuning" else ""
        return f"{self.case} · {self.optimizer_label}{tuning} · seed {self.seed}"

    def error_fields(self) -> dict[str, Any]:
        """A record's own fields for this arm when it produced none (see telebench.execution.task.Unit)."""
        return {"case": self.case, "arm": self.arm, "arm_kind": self.arm_kind, "optimizer": self.optimizer_label,
                "seed": self.seed, "history": [], "teleports": []}

    @property
    def id(self) -> str:
        """Stable content hash: a rerun with the same spec skips the trial."""
        fields = self.to_dict()
        for name, default in _HASHED_UNLESS_DEFAULT.items():  # fields added later: old ids stay valid
            if fields.get(name, default) == default:
                fields.pop(name, None)
        for name, default in _MODEL_HASHED_UNLESS_DEFAULT.items():  # model families came after MLPs
            if fields["model"][name] == default:
                del fields["model"][name]
        for name, (default, kind) in _TELEPORT_HASHED_UNLESS_DEFAULT.items():  # e.g. bump_steps came with lr-bump
            if fields["teleport"] is not None and (fields["teleport"][name] == default or self.arm_kind != kind):
                del fields["teleport"][name]
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def pair_key(self) -> tuple[str, str, str, int]:
        """Arms sharing this key are paired: same initial weights, same batches, run interleaved."""
        return (self.case, self.optimizer_label, self.device, self.seed)
