"""The `kind: meta` suite: YAML → validated :class:`MetaSuite`, with one-sentence errors naming the key.

A meta suite has the same outer shape as a training suite (name, description, defaults, cases) but
its own case settings; see suites/paper-meta.yaml. Case settings merge over `defaults` key by key
for mappings (task, teleport, lstm, meta_train, test) and replace lists (arms) whole. An error
names the key where the offending value was written: the case's, or the defaults'.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from telebench.config.base import NonNegInt, PosFloat, PosInt, distinct_seeds
from telebench.config.errors import key_path, validation_error
from telebench.errors import UserError
from telebench.experiments.meta.models import DESIGNS, PREPROCESS
from telebench.experiments.meta.optimizer import UPDATES, ArmSpec, LSTMSpec
from telebench.experiments.meta.task import DTYPES, INITS, TaskSpec
from telebench.experiments.meta.train import META_LOSSES, MetaTrainSpec

ACTIVATIONS = ("leaky_relu", "relu", "identity", "tanh", "sigmoid")
DEFAULT_LR = {"gd": 3e-4, "learned_lr": 1e-4}  # the paper's GD step size; LSTM(lr, tele)'s first step


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _choice(kind: str, value: str, allowed: tuple[str, ...]) -> str:
    if value in allowed:
        return value
    near = difflib.get_close_matches(value, allowed, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ValueError(f"unknown {kind} {value!r}; {hint}allowed: {', '.join(allowed)}")


class MetaTaskConfig(_Strict):
    widths: list[PosInt] = Field(default_factory=lambda: [20, 20, 20], min_length=3)
    activation: str = "leaky_relu"
    negative_slope: float = 0.1
    samples: PosInt = 20
    heldout: PosInt = 200
    init: str = "uniform"
    dtype: str = "float32"

    _activation = field_validator("activation")(lambda cls, v: _choice("activation", v, ACTIVATIONS))
    _init = field_validator("init")(lambda cls, v: _choice("init", v, INITS))
    _dtype = field_validator("dtype")(lambda cls, v: _choice("dtype", v, tuple(DTYPES)))

    def to_spec(self) -> TaskSpec:
        return TaskSpec(widths=tuple(self.widths), activation=self.activation, negative_slope=self.negative_slope,
                        samples=self.samples, heldout=self.heldout, init=self.init, dtype=self.dtype)


class MetaTeleportConfig(_Strict):
    group: str = "gl-data"
    parametrization: Literal["exp", "linear"] = "exp"
    magnitude: PosFloat = 0.01  # ‖T‖_F of every applied element, as in the paper

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        from telebench.symmetry import GROUPS

        return _choice("group", v, tuple(GROUPS))


class LSTMConfig(_Strict):
    update_design: str = "coordinatewise"
    update_hidden: PosInt = 20
    update_scale: PosFloat = 0.1
    teleport_hidden: PosInt = 20
    preprocess: str = "log-sign"
    step_size_range: tuple[PosFloat, PosFloat] = (1e-7, 5e-3)

    _design = field_validator("update_design")(lambda cls, v: _choice("update design", v, DESIGNS))
    _preprocess = field_validator("preprocess")(lambda cls, v: _choice("preprocessing", v, PREPROCESS))

    @model_validator(mode="after")
    def _range(self) -> LSTMConfig:
        low, high = self.step_size_range
        if low >= high:
            raise ValueError(f"step_size_range must be [low, high] with low < high, got [{low:g}, {high:g}]")
        return self

    def to_spec(self) -> LSTMSpec:
        return LSTMSpec(update_design=self.update_design, update_hidden=self.update_hidden,
                        update_scale=self.update_scale, teleport_hidden=self.teleport_hidden,
                        preprocess=self.preprocess,
                        step_size_range=(self.step_size_range[0], self.step_size_range[1]))


class MetaTrainConfig(_Strict):
    trajectories: PosInt = 100
    steps: PosInt = 100
    unroll: PosInt = 10
    seed: NonNegInt = 0
    lr_update: PosFloat = 1e-3
    lr_teleport: PosFloat = 1e-4
    loss: str = "log"

    _loss = field_validator("loss")(lambda cls, v: _choice("meta loss", v, META_LOSSES))

    def to_spec(self) -> MetaTrainSpec:
        return MetaTrainSpec(trajectories=self.trajectories, steps=self.steps, unroll=self.unroll, seed=self.seed,
                             lr_update=self.lr_update, lr_teleport=self.lr_teleport, loss=self.loss)


class MetaTestConfig(_Strict):
    seeds: list[NonNegInt] = Field(default_factory=lambda: [100000, 100001, 100002, 100003, 100004], min_length=1)
    steps: PosInt = 100

    _distinct = field_validator("seeds")(lambda cls, v: distinct_seeds(v))


class MetaArmConfig(_Strict):
    name: str = Field(min_length=1)
    update: str
    teleport: bool = False
    lr: PosFloat | None = None

    _update = field_validator("update")(lambda cls, v: _choice("update", v, UPDATES))

    @model_validator(mode="after")
    def _consistent(self) -> MetaArmConfig:
        if self.update == "learned_lr" and not self.teleport:
            raise ValueError("update 'learned_lr' takes its step size from the teleport LSTM, as in the paper, "
                             "so it needs teleport: true; use update: gd for a fixed step size")
        if self.update == "lstm" and self.lr is not None:
            raise ValueError("update 'lstm' writes its own steps, so lr has no effect; remove it")
        return self

    def to_spec(self) -> ArmSpec:
        lr = self.lr if self.lr is not None else DEFAULT_LR.get(self.update)
        return ArmSpec(name=self.name, update=self.update, teleport=self.teleport, lr=lr)


class MetaCase(_Strict):
    """A case with defaults merged in: every setting is concrete."""

    name: str = Field(min_length=1)
    task: MetaTaskConfig = Field(default_factory=MetaTaskConfig)
    teleport: MetaTeleportConfig = Field(default_factory=MetaTeleportConfig)
    lstm: LSTMConfig = Field(default_factory=LSTMConfig)
    meta_train: MetaTrainConfig = Field(default_factory=MetaTrainConfig)
    test: MetaTestConfig = Field(default_factory=MetaTestConfig)
    arms: list[MetaArmConfig] = Field(min_length=1)


class MetaSuiteFile(_Strict):
    """The document's outer shape; case settings are validated after merging (see :func:`load_meta_suite`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: Literal["meta"]
    description: str = ""
    threads: PosInt | None = 1  # torch threads for the run; null leaves torch's default. The matrices are
    # tiny, so more threads only add synchronisation, and on a busy machine a descheduled thread stalls every op.
    defaults: dict[str, Any] = Field(default_factory=dict)
    cases: list[dict[str, Any]] = Field(min_length=1)


@dataclass
class MetaSuite:
    """A validated meta suite: what :func:`telebench.experiments.meta.run_meta_suite` runs."""

    name: str
    description: str
    cases: list[MetaCase]
    source: Path
    threads: int | None = None
    notes: list[str] = field(default_factory=list)


# ---- merging and error origins ---------------------------------------------------------------------


def _merge(defaults: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """defaults ← case, mappings merged key by key, everything else (lists included) replaced."""
    out = copy.deepcopy(defaults)
    for key, value in case.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _has(doc: Any, loc: tuple[str | int, ...]) -> bool:
    for part in loc:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return False
        elif not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


@dataclass(frozen=True)
class _Origin:
    raw_defaults: dict[str, Any]
    raw_case: dict[str, Any]
    index: int

    def base(self, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
        """Where the value at ``loc`` was written: the case, else the defaults, else the case (missing)."""
        if not _has(self.raw_case, loc[:1]) and _has(self.raw_defaults, loc[:1]):
            return ("defaults",)
        if loc and loc[0] != "arms" and not _has(self.raw_case, loc) and _has(self.raw_defaults, loc):
            return ("defaults",)
        return ("cases", self.index)

    def written(self, *loc: str | int) -> bool:
        """Whether the suite spelled out the value at ``loc`` (in the case or the defaults)."""
        return _has(self.raw_case, loc) or _has(self.raw_defaults, loc)

    def key(self, *loc: str | int) -> str:
        return key_path(self.base(loc) + loc)


def _fail(source: str, key: str, problem: str) -> UserError:
    return UserError(f"{source}: {key}: {problem}.")


def _first_error_loc(exc: ValidationError) -> tuple[str | int, ...]:
    """The error ``validation_error`` reports: the first unknown key, else the first error."""
    errors = exc.errors(include_url=False)
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    return tuple(first["loc"])


# ---- checks across keys -------------------------------------------------------------------------


def _check_case(source: str, case: MetaCase, origin: _Origin) -> None:
    train = case.meta_train
    if train.unroll > train.steps:
        raise _fail(source, origin.key("meta_train", "unroll"), f"an unroll of {train.unroll} steps is longer than "
                    f"the {train.steps}-step trajectory (meta_train.steps); use an unroll of at most {train.steps}")
    names: dict[str, int] = {}
    for k, arm in enumerate(case.arms):
        if arm.name in names:
            raise _fail(source, origin.key("arms", k, "name"), f"arm name {arm.name!r} repeats arms[{names[arm.name]}]; "
                        "give each arm a distinct name")
        names[arm.name] = k
        if arm.update == "learned_lr":
            low, high = case.lstm.step_size_range
            lr = arm.to_spec().lr
            assert lr is not None
            if not low < lr < high:
                raise _fail(source, origin.key("arms", k, "lr"), f"the first step size {lr:g} of a learned_lr arm must "
                            f"lie inside lstm.step_size_range ({low:g}, {high:g}); change one of them")
    overlap = sorted(set(case.test.seeds) & set(train.to_spec().seeds))
    if overlap:
        raise _fail(source, origin.key("test", "seeds"), f"seed {overlap[0]} is also a meta-training trajectory "
                    f"(meta_train.seed {train.seed} to {train.seed + train.trajectories - 1}); test on unseen seeds")
    if any(arm.teleport for arm in case.arms):
        _check_group(source, case, origin)


def _check_group(source: str, case: MetaCase, origin: _Origin) -> None:
    """The group must act on the task's network, and (gl-data) exactly on its batch."""
    from telebench.symmetry import SymmetryError, get_group

    group = get_group(case.teleport.group)
    task = case.task.to_spec()
    try:
        group.check(task.architecture())
    except SymmetryError as exc:
        reason = str(exc).split(": ", 1)[-1].rstrip(".").replace(f"group {group.name!r} ", "it ", 1)
        if not origin.written("teleport", "group"):
            raise _fail(source, origin.key("task", "activation"), f"{task.activation!r} does not fit the default "
                        f"teleport group {group.name!r}: {reason} (set teleport.group)") from None
        raise _fail(source, origin.key("teleport", "group"), f"group {group.name!r} does not fit "
                    f"{origin.key('task', 'activation')} {task.activation!r}: {reason}") from None
    narrowest = min(task.widths[1:-1])
    if not group.exact and task.samples > narrowest:
        raise _fail(source, origin.key("task", "samples"), f"group {group.name!r} preserves the loss on a batch of "
                    f"{task.samples} only up to least squares, because the batch is larger than the narrowest hidden "
                    f"width {narrowest}; use at most {narrowest} samples, or an exact group such as rescale")


# ---- loading ----------------------------------------------------------------------------------------


def _apply_overrides(source: str, raw_cases: list[dict[str, Any]], overrides: Any) -> list[str]:
    """Map the shared command-line overrides onto meta cases; return notes for the user."""
    if overrides is None:
        return []
    notes: list[str] = []
    if overrides.eval_every is not None:
        raise UserError(f"--eval-every: {source} is a meta suite, which records the loss at every step; drop the option.")
    if overrides.devices is not None and overrides.devices != ["cpu"]:
        raise UserError(f"--devices: {source} is a meta suite, which runs on cpu only; drop the option or use cpu.")
    for raw in raw_cases:
        if overrides.seeds is not None:
            raw.setdefault("test", {})["seeds"] = list(overrides.seeds)
        if overrides.budget_steps is not None:
            raw.setdefault("test", {})["steps"] = overrides.budget_steps
    if overrides.seeds is not None:
        notes.append("--seeds: replaces every case's test.seeds (the unseen initialisations).")
    if overrides.budget_steps is not None:
        notes.append("--budget-steps: replaces every case's test.steps.")
    return notes


def _select(source: str, cases: list[MetaCase], overrides: Any) -> list[MetaCase]:
    if overrides is None:
        return cases
    if overrides.cases is not None:
        names = [c.name for c in cases]
        for name in overrides.cases:
            if name not in names:
                raise UserError(f"--cases: {source} has no case {name!r}; choose from {', '.join(names)}.")
        cases = [c for c in cases if c.name in overrides.cases]
    if overrides.arms is not None:
        known = {a.name for c in cases for a in c.arms}
        for name in overrides.arms:
            if name not in known:
                raise UserError(f"--arms: {source} defines no arm {name!r}; choose from {', '.join(sorted(known))}.")
        kept = []
        for case in cases:
            arms = [a for a in case.arms if a.name in overrides.arms]
            if arms:
                kept.append(case.model_copy(update={"arms": arms}))
        cases = kept
    return cases


def load_meta_suite(path: str | Path, raw: dict[str, Any] | None = None, overrides: Any = None) -> MetaSuite:
    """Validate a meta suite; ``raw`` is the already-read YAML (with --set applied) when the suite loader
    dispatches here. ``overrides`` is a :class:`telebench.experiments.pairs.load.Overrides` or None."""
    path = Path(path)
    source = str(path)
    if raw is None:
        from telebench.config.yaml_io import read_yaml

        raw = read_yaml(path)
    try:
        doc = MetaSuiteFile.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(source, exc, MetaSuiteFile) from None
    raw_cases = [copy.deepcopy(c) for c in doc.cases]
    notes = _apply_overrides(source, raw_cases, overrides)
    cases: list[MetaCase] = []
    for i, raw_case in enumerate(raw_cases):
        origin = _Origin(doc.defaults, doc.cases[i], i)
        merged = _merge(doc.defaults, raw_case)
        try:
            case = MetaCase.model_validate(merged)
        except ValidationError as exc:
            raise validation_error(source, exc, MetaCase, origin.base(_first_error_loc(exc))) from None
        _check_case(source, case, origin)
        cases.append(case)
    seen: dict[str, int] = {}
    for i, case in enumerate(cases):
        if case.name in seen:
            raise _fail(source, f"cases[{i}].name", f"case name {case.name!r} repeats cases[{seen[case.name]}]; "
                        "give each case a distinct name")
        seen[case.name] = i
    return MetaSuite(name=doc.name, description=doc.description, cases=_select(source, cases, overrides),
                     source=path, threads=doc.threads, notes=notes)
