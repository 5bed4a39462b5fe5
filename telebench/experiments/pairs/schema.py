"""Pydantic models of the suite YAML (the format is documented in docs/suite-format.md).

Every mapping forbids unknown keys, so a typo is an error instead of a silently ignored setting.
Settings that can be inherited (case settings from `defaults`, teleport settings from the levels
above) carry real defaults; what a level actually set is read from pydantic's `model_fields_set`,
so an explicit `cap: null` still overrides an inherited cap.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from telebench.config import registry
from telebench.config.base import (
    DEVICE_PATTERN,
    DatasetConfig,
    ModelConfig,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Strict,
    check_name,
    distinct_seeds,
)
from telebench.experiments.pairs.spec import (
    ARMS,
    BudgetSpec,
    PretrainSpec,
    ScheduleSpec,
    TargetSpec,
    TeleportSpec,
)
from telebench.training.specs import MODEL_FAMILIES, freeze

_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ScheduleConfig(Strict):
    """When teleports happen: exactly one of at_steps, at_epochs, every, first_minibatches."""

    at_steps: list[NonNegInt] | None = Field(default=None, min_length=1)
    at_epochs: list[NonNegInt] | None = Field(default=None, min_length=1)
    every: PosInt | None = None
    start: NonNegInt | None = None
    first_minibatches: PosInt | None = None
    epochs: list[NonNegInt] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        kinds = [k for k in ("at_steps", "at_epochs", "every", "first_minibatches") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = f" (got {' and '.join(kinds)})" if kinds else ""
            raise ValueError(f"give exactly one of at_steps, at_epochs, every or first_minibatches{got}")
        if self.start is not None and self.every is None:
            raise ValueError("'start' only goes with 'every'")
        if self.epochs is not None and self.first_minibatches is None:
            raise ValueError("'epochs' only goes with 'first_minibatches' (use at_epochs for one teleport per epoch)")
        return self

    def to_spec(self) -> ScheduleSpec:
        if self.at_steps is not None:
            return ScheduleSpec(kind="at_steps", steps=tuple(sorted(set(self.at_steps))))
        if self.at_epochs is not None:
            return ScheduleSpec(kind="at_epochs", epochs=tuple(sorted(set(self.at_epochs))))
        if self.every is not None:
            return ScheduleSpec(kind="every", every=self.every, start=self.start or 0)
        assert self.first_minibatches is not None
        epochs = tuple(sorted(set(self.epochs or [0])))
        return ScheduleSpec(kind="first_minibatches", count=self.first_minibatches, epochs=epochs)


class TeleportConfig(Strict):
    """Teleport settings; any level (defaults, case, optimizer, arm) may set any subset of them."""

    group: str = "rescale"
    objective: str = "grad_norm"
    direction: Literal["increase", "decrease"] = "increase"
    steps: PosInt = 10
    lr: PosFloat = 1e-2
    batch_size: PosInt = 200
    parametrization: Literal["exp", "linear"] = "exp"
    normalize_step: bool = False
    cap: PosFloat | None = None
    tolerance: PosFloat | None = None
    state_policy: Literal["reset", "keep", "transport"] = "reset"
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(at_steps=[0]))
    objective_params: dict[str, Any] = Field(default_factory=dict)
    bump_steps: PosInt = 10  # lr-bump arms: how many optimizer steps each step-size scaling lasts

    def to_spec(self) -> TeleportSpec:
        return TeleportSpec(
            group=self.group, objective=self.objective, direction=self.direction, steps=self.steps, lr=self.lr,
            batch_size=self.batch_size, parametrization=self.parametrization, normalize_step=self.normalize_step,
            cap=self.cap, tolerance=self.tolerance, state_policy=self.state_policy, schedule=self.schedule.to_spec(),
            objective_params=freeze(self.objective_params), bump_steps=self.bump_steps,
        )

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        return check_name("group", v, registry.group_names())

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str) -> str:
        return check_name("objective", v, registry.objective_names())


class TrainModelConfig(ModelConfig):
    """An MLP (widths, activation, ...), a built-in family with its constructor's `kwargs`, or a user's own
    model: `factory: "package.module:function"` called with `kwargs` (docs/real-models.md)."""

    family: str = "mlp"
    factory: str | None = Field(default=None, min_length=3)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    inputs: Literal["flat", "image", "tokens"] | None = None  # None: the family's own (mlp flat, cnn image, ...)

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        return check_name("model family", v, tuple(f for f in MODEL_FAMILIES if f != "factory"))

    @model_validator(mode="after")
    def _one_kind(self) -> TrainModelConfig:
        if self.factory is not None and "family" in self.model_fields_set:
            raise ValueError("give either `family` or `factory`, not both")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError(f"factory {self.factory!r} must read 'package.module:function'")
        return self

    @property
    def kind(self) -> str:
        """The family in effect: `factory` for a user's model."""
        return "factory" if self.factory is not None else self.family


class OptimizerConfig(Strict):
    name: str
    lr: PosFloat
    label: str | None = Field(default=None, min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    teleport: TeleportConfig = Field(default_factory=TeleportConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("optimizer", v, registry.optimizer_names())


class ArmConfig(Strict):
    """An arm: a bare kind (`teleport`) or a mapping with its own label, kind and teleport settings."""

    name: str = Field(min_length=1)
    kind: str | None = None
    teleport: TeleportConfig = Field(default_factory=TeleportConfig)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            check_name("arm", data, ARMS)
            return {"name": data}
        return data

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str | None) -> str | None:
        return None if v is None else check_name("arm kind", v, ARMS)

    @model_validator(mode="after")
    def _resolve_kind(self) -> ArmConfig:
        if self.kind is None:
            if self.name not in ARMS:
                raise ValueError(f"arm {self.name!r} needs a kind: one of {', '.join(ARMS)}")
            self.kind = self.name
        if self.kind == "baseline" and self.teleport.model_fields_set:
            raise ValueError("a baseline arm never teleports, so it takes no teleport settings")
        if self.kind != "lr-bump" and "bump_steps" in self.teleport.model_fields_set:
            raise ValueError(f"bump_steps applies to lr-bump arms only, not to a {self.kind} arm")
        return self


class BudgetConfig(Strict):
    steps: PosInt | None = None
    epochs: PosFloat | None = None
    seconds: PosFloat | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> BudgetConfig:
        if sum(v is not None for v in (self.steps, self.epochs, self.seconds)) != 1:
            raise ValueError("give exactly one of steps, epochs or seconds")
        return self

    def to_spec(self) -> BudgetSpec:
        for kind in ("steps", "epochs", "seconds"):
            value = getattr(self, kind)
            if value is not None:
                return BudgetSpec(kind=kind, value=float(value))
        raise AssertionError("validated budget has no kind")


class TargetConfig(Strict):
    """An absolute `value`, or `baseline_final: true` (the baseline's median final value, relaxed by `slack`)."""

    metric: Literal["train_loss", "val_loss", "val_accuracy"] = "train_loss"
    value: float | None = None
    baseline_final: bool | None = None
    slack: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> TargetConfig:
        if self.value is not None and self.baseline_final:
            raise ValueError("give either value or baseline_final: true, not both")
        if self.value is None and self.baseline_final is False:
            raise ValueError("no target left: give value, or baseline_final: true")
        if self.value is not None and self.slack:
            raise ValueError("slack only applies with baseline_final: true")
        if self.metric == "val_accuracy" and self.value is not None and not 0 <= self.value <= 1:
            raise ValueError("a val_accuracy target must lie between 0 and 1")
        return self

    def to_spec(self) -> TargetSpec:
        if self.value is not None:
            return TargetSpec(metric=self.metric, kind="absolute", value=float(self.value))
        return TargetSpec(metric=self.metric, kind="baseline-final", value=None, slack=float(self.slack))


TUNE_METRICS = ("final_train_loss", "final_val_loss")


class TuneLRConfig(Strict):
    """`tune_lr`: try each optimizer's lr × every `grid` factor on the calibration seeds first, keep the best."""

    grid: list[PosFloat] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0], min_length=2)
    metric: Literal["final_train_loss", "final_val_loss"] = "final_train_loss"  # lower is better

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if len(set(v)) != len(v):
            raise ValueError("grid factors repeat; list each factor once")
        return sorted(v)


class PretrainConfig(Strict):
    """`pretrain`: before the arms, train the pair's initial network until the loss on a holdout carved from the
    training split stops improving (telebench/experiments/pairs/pretrain.py; docs/suite-format.md#pretraining)."""

    patience: PosInt = 3
    max_epochs: PosInt = 40
    holdout: PosInt = 5000
    every_epochs: PosInt = 1
    lr: PosFloat | None = None  # None: the optimizer's own lr

    @model_validator(mode="after")
    def _check_every(self) -> PretrainConfig:
        if self.every_epochs > self.max_epochs:
            raise ValueError(f"every_epochs {self.every_epochs} is more than max_epochs {self.max_epochs}")
        return self

    def to_spec(self, lr: float | None = None) -> PretrainSpec:
        """`lr` stands in for an unset lr (a `tune_lr` case pretrains at the written lr in every stage)."""
        return PretrainSpec(self.patience, self.max_epochs, self.holdout, self.every_epochs,
                            self.lr if self.lr is not None else lr)


class CaseConfig(Strict):
    """Everything a case may set; `defaults` holds the same keys. None means: must come from the other."""

    dataset: DatasetConfig | None = None
    model: TrainModelConfig | None = None
    optimizers: list[OptimizerConfig] | None = Field(default=None, min_length=1)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0], min_length=1)
    # baseline-only runs that set a derived (baseline_final) target and are never compared
    calibration_seeds: list[NonNegInt] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=lambda: ["cpu"], min_length=1)
    batch_size: PosInt = 32
    eval_batch_size: PosInt = 1024
    budget: BudgetConfig | None = None
    eval_every: PosInt = 10
    target: TargetConfig = Field(default_factory=lambda: TargetConfig(baseline_final=True))
    arms: list[ArmConfig] = Field(default_factory=lambda: [ArmConfig(name="baseline"), ArmConfig(name="teleport")],
                                  min_length=1)
    teleport: TeleportConfig = Field(default_factory=TeleportConfig)
    tune_lr: TuneLRConfig | None = None  # tuned baselines (docs/suite-format.md); `true` takes the default grid
    pretrain: PretrainConfig | None = None  # early-stopped training before the arms (docs/suite-format.md)

    @field_validator("tune_lr", mode="before")
    @classmethod
    def _tune_lr(cls, v: Any) -> Any:
        return ({} if v else None) if isinstance(v, bool) else v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        for name in v:
            if not DEVICE_PATTERN.match(name):
                raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
        return v

    _seeds = field_validator("seeds", "calibration_seeds")(lambda cls, v: distinct_seeds(v))


class CaseInput(CaseConfig):
    name: str = Field(min_length=1)


PRIMARY_METRICS = ("time_to_target", "steps_to_target", "final_train_loss", "final_val_loss", "auc_log_train_loss")


class ComparisonConfig(Strict):
    """One pre-registered comparison: `arm` against the arm `against` (the baseline unless named), paired by
    seed, in every case and optimizer that has both unless `case` or `optimizer` narrows it."""

    arm: str = Field(min_length=1)
    against: str = Field(default="baseline", min_length=1)
    case: str | None = Field(default=None, min_length=1)
    optimizer: str | None = Field(default=None, min_length=1)

    def record(self) -> dict[str, Any]:
        return {"arm": self.arm, "against": self.against, "case": self.case, "optimizer": self.optimizer}


class AnalysisConfig(Strict):
    """How the report turns paired seeds into verdicts: the metric that decides them (α is fixed at 0.05) and,
    optionally, the comparisons declared before the run (docs/suite-format.md#analysis); `load.py` checks
    that they name arms, cases and optimizers the suite has."""

    primary_metric: Literal[
        "time_to_target", "steps_to_target", "final_train_loss", "final_val_loss", "auc_log_train_loss"
    ] = "time_to_target"
    primary_comparisons: list[ComparisonConfig] | None = Field(default=None, min_length=1)

    def record(self) -> dict[str, Any]:
        """What results.json's `analysis` keeps of it (α is added by the experiment)."""
        out: dict[str, Any] = {"primary_metric": self.primary_metric}
        if self.primary_comparisons is not None:
            out["primary_comparisons"] = [c.record() for c in self.primary_comparisons]
        return out


class SuiteFile(Strict):
    """The YAML document as written, before defaults are merged into the cases."""

    name: str
    description: str = ""
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    defaults: CaseConfig = Field(default_factory=CaseConfig)
    cases: list[CaseInput] = Field(min_length=1)
    executor: str = "local"
    kind: Literal["train"] = "train"  # other kinds are dispatched to their own schema before this model

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SUITE_NAME.match(v):
            raise ValueError("a suite name may hold only letters, digits, '.', '_' and '-' (it names folders)")
        return v

    @field_validator("executor")
    @classmethod
    def _executor(cls, v: str) -> str:
        return check_name("executor", v, registry.EXECUTORS)


class Case(Strict):
    """A case with its defaults merged in: every setting is concrete."""

    name: str
    dataset: DatasetConfig
    model: TrainModelConfig
    optimizers: list[OptimizerConfig]
    seeds: list[int]
    calibration_seeds: list[int]
    devices: list[str]
    batch_size: int
    eval_batch_size: int
    budget: BudgetConfig
    eval_every: int
    target: TargetConfig
    arms: list[ArmConfig]
    teleport: TeleportConfig  # defaults.teleport ← case.teleport; optimizers and arms refine it
    tune_lr: TuneLRConfig | None = None
    pretrain: PretrainConfig | None = None
    tuned_lr: dict[str, float] = Field(default_factory=dict)  # optimizer label → lr the tuning stage chose


class Suite(BaseModel):
    """A validated suite: what `expand` turns into trials."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str
    defaults: CaseConfig
    cases: list[Case]
    executor: str
    source: Path
    notes: list[str] = Field(default_factory=list)  # things the user should see (e.g. `auto` fell back to cpu)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
