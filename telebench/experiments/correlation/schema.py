"""The correlation study's YAML: what to train, how many networks, and which metrics to measure.

A separate, small schema (not a `telebench run` suite): a study trains N networks per case with
different seeds and measures them once at the end, so it has no arms, targets or teleports. Case
keys may come from `defaults`; a case's key replaces the default as a whole, except `model`, which
merges key by key. Every mapping rejects unknown keys. Errors are one sentence naming the file and
the key path, as for suites.

A case trains for a fixed `budget` or, with `early_stopping`, until the loss on a calibration
holdout carved from the training split stops improving (the two are mutually exclusive; a case
drops an inherited one with `budget: null` or `early_stopping: null`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from telebench.config import registry
from telebench.config.base import (
    DatasetConfig,
    ModelConfig,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Strict,
    check_name,
)
from telebench.config.errors import validation_error
from telebench.errors import UserError
from telebench.symmetry.objectives.curvature_reference import REFERENCE_BATCH, REFERENCE_DRAWS
from telebench.symmetry.objectives.sharpness import DIRECTIONS
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec, Params, freeze

MIN_NETWORKS = 3  # a correlation over fewer points has no interval worth printing


class SharpnessMetric(Strict):
    """Mean loss increase over random directions (telebench.symmetry.objectives.sharpness.sharpness)."""

    metric: Literal["sharpness"]
    radii: list[PosFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    n_directions: PosInt = 64
    directions: str = "isotropic"
    seed: NonNegInt = 0

    @field_validator("directions")
    @classmethod
    def _directions(cls, v: str) -> str:
        return check_name("sharpness directions", v, DIRECTIONS)


class CurvatureMetric(Strict):
    """telebench's curvature of the orbit exp(tM)·w under ``group`` (telebench.symmetry.objectives.curvature);
    not the reference code's ψ, which is `curvature_reference`."""

    metric: Literal["curvature"]
    group: str = "rescale"
    n_draws: PosInt = 32
    seed: NonNegInt = 0

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        return check_name("group", v, registry.group_names())


class CurvatureReferenceMetric(Strict):
    """The reference code's curvature ψ (telebench.symmetry.objectives.curvature_reference): its own action,
    directions and batches of ``batch_size`` rows, averaged over ``n_draws`` (M, batch) draws."""

    metric: Literal["curvature_reference"]
    n_draws: PosInt = REFERENCE_DRAWS
    batch_size: PosInt = REFERENCE_BATCH
    seed: NonNegInt = 0


# Activations under which ψ is defined: invertible and piecewise linear (it divides by σ′, takes σ″ = 0).
REFERENCE_ACTIVATIONS = ("leaky_relu", "identity", "linear")

Metric = Annotated[SharpnessMetric | CurvatureMetric | CurvatureReferenceMetric, Field(discriminator="metric")]


class StudyOptimizerConfig(Strict):
    name: str
    lr: PosFloat
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("optimizer", v, registry.optimizer_names())


class Budget(Strict):
    steps: PosInt | None = None
    epochs: PosFloat | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Budget:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        return self


class EarlyStopping(Strict):
    """Train until the loss on a holdout of the training split stops improving, then restore the best weights."""

    patience: PosInt = 3  # checks without an improvement before stopping
    max_epochs: PosInt = 40
    holdout: PosInt = 5000  # training samples set aside (the networks train on the rest)
    every_epochs: PosFloat = 1.0  # epochs between checks
    min_delta: NonNegFloat = 0.0  # an improvement must lower the best holdout loss by more than this
    seed: NonNegInt = 0  # the holdout's permutation of the training split, the same for every network

    @model_validator(mode="after")
    def _check_within_max(self) -> EarlyStopping:
        if self.every_epochs > self.max_epochs:
            raise ValueError(f"every_epochs ({self.every_epochs:g}) must not exceed max_epochs ({self.max_epochs})")
        return self


class StudyCaseConfig(Strict):
    dataset: DatasetConfig | None = None
    model: ModelConfig | None = None
    optimizer: StudyOptimizerConfig | None = None
    networks: PosInt = 30
    seed_start: NonNegInt = 0
    batch_size: PosInt = 20
    budget: Budget | None = None
    early_stopping: EarlyStopping | None = None
    measure_batch: PosInt = 2000
    metrics: dict[str, Metric] | None = Field(default=None, min_length=1)


class CaseInput(StudyCaseConfig):
    name: str = Field(min_length=1)


class StudyFile(Strict):
    kind: Literal["correlation"] = "correlation"
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    defaults: StudyCaseConfig = Field(default_factory=StudyCaseConfig)
    cases: list[CaseInput] = Field(min_length=1)


@dataclass(frozen=True)
class MetricSpec:
    """One measurement: a label for reports, the metric's kind and its options."""

    label: str
    kind: str  # sharpness | curvature | curvature_reference
    params: Params

    def options(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """A case's early stopping, resolved: see `EarlyStopping` for the fields."""

    patience: int
    max_epochs: int
    holdout: int
    every_epochs: float
    min_delta: float = 0.0
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"patience": self.patience, "max_epochs": self.max_epochs, "holdout": self.holdout,
                "every_epochs": self.every_epochs, "min_delta": self.min_delta, "seed": self.seed}


@dataclass(frozen=True)
class StudyCase:
    """A case with defaults merged: plain data, picklable for worker processes."""

    name: str
    dataset: DatasetSpec
    model: ModelSpec
    optimizer: OptimizerSpec
    networks: int
    seed_start: int
    batch_size: int
    budget_kind: str  # steps | epochs | early_stopping
    budget_value: float  # early_stopping: its max_epochs
    measure_batch: int
    metrics: tuple[MetricSpec, ...]
    early_stopping: EarlyStoppingSpec | None = None

    @property
    def seeds(self) -> range:
        return range(self.seed_start, self.seed_start + self.networks)

    def budget_text(self) -> str:
        """The training budget in words, for `list` and reports."""
        stop = self.early_stopping
        if stop is None:
            return f"{self.budget_value:g} {self.budget_kind}"
        return (f"early stopping on {stop.holdout} held-out training samples (patience {stop.patience}, "
                f"every {stop.every_epochs:g} epochs, at most {stop.max_epochs} epochs)")

    def describe(self) -> dict[str, Any]:
        """The case as JSON-able plain data, for results files. A case with a fixed budget describes itself
        exactly as before early stopping existed, so its `case_key`, and an old output folder's resume, hold."""
        training: dict[str, Any] = ({"budget": {self.budget_kind: self.budget_value}} if self.early_stopping is None
                                    else {"early_stopping": self.early_stopping.describe()})
        return {
            "name": self.name,
            "dataset": {"name": self.dataset.name, **dict(self.dataset.params)},
            "model": {"widths": list(self.model.widths), "activation": self.model.activation,
                      "negative_slope": self.model.negative_slope, "bias": self.model.bias},
            "optimizer": {"name": self.optimizer.name, "lr": self.optimizer.lr, "kwargs": dict(self.optimizer.kwargs)},
            "networks": self.networks,
            "seeds": [self.seed_start, self.seed_start + self.networks - 1],
            "batch_size": self.batch_size,
            **training,
            "measure_batch": self.measure_batch,
            "metrics": {m.label: {"metric": m.kind, **m.options()} for m in self.metrics},
        }


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    source: str
    cases: tuple[StudyCase, ...]
    notes: tuple[str, ...] = ()


def _read(path: Path) -> dict[str, Any]:
    from telebench.config.yaml_io import read_yaml

    raw = read_yaml(path, example="suites/paper-correlation.yaml")
    if raw.get("kind") != "correlation":
        raise UserError(f"{path}: kind: must be 'correlation' for `telebench correlate` "
                        "(training suites go to `telebench run`).")
    return raw


def _fail(source: str, path: str, problem: str) -> UserError:
    return UserError(f"{source}: {path}: {problem}.")


def _merge(defaults: StudyCaseConfig, case: CaseInput) -> dict[str, Any]:
    merged = {**defaults.given(), **{k: v for k, v in case.given().items() if k != "name"}}
    if defaults.model is not None and case.model is not None:
        merged["model"] = ModelConfig(**{**defaults.model.given(), **case.model.given()})
    return merged


def _where(key: str, case: CaseInput, index: int) -> str:
    """The key path of a setting: the case's own, or the defaults' when the case inherits it."""
    return f"cases[{index}].{key}" if key in case.model_fields_set else f"defaults.{key}"


def _metric(source: str, where: str, label: str, metric: SharpnessMetric | CurvatureMetric | CurvatureReferenceMetric,
            model: ModelConfig) -> MetricSpec:
    """A metric's spec, once it is known to be defined on the case's network."""
    if isinstance(metric, CurvatureMetric):
        fits = registry.GROUP_ACTIVATIONS.get(metric.group)
        if fits is not None and model.activation not in fits:
            raise _fail(source, f"{where}.group", f"group {metric.group!r} does not preserve a {model.activation} "
                        f"network; use it with {', '.join(fits)}")
    if isinstance(metric, CurvatureReferenceMetric) and (
            model.activation not in REFERENCE_ACTIVATIONS or (model.activation == "leaky_relu" and model.negative_slope <= 0)):
        raise _fail(source, f"{where}.metric", "curvature_reference needs an invertible, piecewise-linear activation "
                    f"({', '.join(REFERENCE_ACTIVATIONS)}, with a positive slope), not {model.activation}")
    return MetricSpec(label, metric.metric, freeze(metric.model_dump(exclude={"metric"})))


def _training(source: str, merged: dict[str, Any], case: CaseInput, index: int,
              n_train: int | None) -> tuple[str, float, EarlyStoppingSpec | None, int | None]:
    """A case's training, (budget kind, budget value, early stopping, training samples it trains on): a fixed
    `budget` or `early_stopping`, never both; the early-stopping holdout is taken from the training split."""
    budget: Budget | None = merged.get("budget")
    stop: EarlyStopping | None = merged.get("early_stopping")
    if budget is not None and stop is not None:
        raise _fail(source, _where("early_stopping", case, index),
                    f"budget ({_where('budget', case, index)}) and early_stopping are mutually exclusive; keep one "
                    "(a case drops an inherited one with `budget: null` or `early_stopping: null`)")
    if budget is None and stop is None:
        raise _fail(source, f"cases[{index}].budget", "is missing; set budget (or early_stopping) in the case or under "
                    "defaults")
    if stop is None:
        assert budget is not None
        value = budget.steps if budget.steps is not None else budget.epochs
        assert value is not None  # Budget holds exactly one of the two
        return "steps" if budget.steps is not None else "epochs", float(value), None, n_train
    batch_size = merged.get("batch_size", 20)
    if n_train is not None and stop.holdout + batch_size > n_train:
        raise _fail(source, _where("early_stopping", case, index) + ".holdout",
                    f"{stop.holdout} held-out samples leave fewer than one batch ({batch_size}) of the {n_train} "
                    f"training samples to train on; use at most {n_train - batch_size}")
    spec = EarlyStoppingSpec(stop.patience, stop.max_epochs, stop.holdout, stop.every_epochs, stop.min_delta, stop.seed)
    return "early_stopping", float(stop.max_epochs), spec, None if n_train is None else n_train - stop.holdout


def _resolve(source: str, defaults: StudyCaseConfig, case: CaseInput, index: int, networks: int | None) -> StudyCase:
    merged = _merge(defaults, case)
    for key in ("dataset", "model", "optimizer", "metrics"):
        if merged.get(key) is None:
            raise _fail(source, f"cases[{index}].{key}", "is missing; set it in the case or under defaults")
    dataset, model, optimizer = merged["dataset"], merged["model"], merged["optimizer"]
    if model.widths is None:
        raise _fail(source, _where("model", case, index) + ".widths", "is missing; list every layer width, e.g. [784, 16, 10, 10]")
    try:
        n_features, n_outputs = registry.dataset_shape(dataset.name, dataset.params) or (None, None)
        n_train = registry.dataset_train_size(dataset.name, dataset.params)
    except UserError as exc:
        raise _fail(source, _where("dataset", case, index), str(exc).rstrip(".")) from None
    if n_features is not None and (model.widths[0] != n_features or model.widths[-1] != n_outputs):
        raise _fail(source, _where("model", case, index) + ".widths",
                    f"must start at {n_features} inputs and end at {n_outputs} outputs for {dataset.name}, "
                    f"got {model.widths}")
    budget_kind, budget_value, stop, n_fit = _training(source, merged, case, index, n_train)
    batch_size, measure = merged.get("batch_size", 20), merged.get("measure_batch", 2000)
    left = "" if stop is None else " left after the early-stopping holdout"
    for key, value in (("batch_size", batch_size), ("measure_batch", measure)):
        if n_fit is not None and value > n_fit:
            raise _fail(source, _where(key, case, index),
                        f"{value} is larger than the {n_fit} training samples of {dataset.name}{left}; use at most {n_fit}")
    where = _where("metrics", case, index)
    metrics = [_metric(source, f"{where}.{label}", label, metric, model) for label, metric in merged["metrics"].items()]
    count = networks if networks is not None else merged.get("networks", 30)
    if count < MIN_NETWORKS:
        raise _fail(source, _where("networks", case, index),
                    f"a correlation needs at least {MIN_NETWORKS} networks, got {count}")
    return StudyCase(
        name=case.name,
        dataset=DatasetSpec(dataset.name, freeze(dataset.params)),
        model=ModelSpec(tuple(model.widths), model.activation, model.negative_slope, model.bias),
        optimizer=OptimizerSpec(optimizer.name, optimizer.lr, freeze(optimizer.kwargs)),
        networks=count,
        seed_start=merged.get("seed_start", 0),
        batch_size=batch_size,
        budget_kind=budget_kind,
        budget_value=budget_value,
        measure_batch=measure,
        metrics=tuple(metrics),
        early_stopping=stop,
    )


def load_study(path: str | Path, networks: int | None = None, cases: list[str] | None = None) -> Study:
    """Read and validate a study; ``networks`` overrides every case's count, ``cases`` keeps those cases."""
    path = Path(path)
    return resolve_study(path, _read(path), networks, cases)


def resolve_study(path: Path, raw: dict[str, Any], networks: int | None = None,
                  cases: list[str] | None = None) -> Study:
    """Validate a study's YAML (with --set applied) and resolve its cases against its defaults."""
    source = str(path)
    try:
        doc = StudyFile.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(source, exc, StudyFile) from None
    if networks is not None and networks < MIN_NETWORKS:
        raise UserError(f"--networks {networks}: a correlation needs at least {MIN_NETWORKS} networks; pass a larger count.")
    names = [c.name for c in doc.cases]
    if len(set(names)) != len(names):
        raise _fail(source, "cases", "case names repeat; give each case a unique name")
    if cases is not None:
        unknown = [c for c in cases if c not in names]
        if unknown:
            raise UserError(f"--cases {unknown[0]!r} is not a case of {source}; choose from {', '.join(names)}.")
    resolved = tuple(
        _resolve(source, doc.defaults, case, i, networks)
        for i, case in enumerate(doc.cases)
        if cases is None or case.name in cases
    )
    return Study(doc.name, doc.description.strip(), source, resolved)
