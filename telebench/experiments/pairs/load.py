"""Suite YAML → validated `Suite` → plan of `TrialSpec`s.

`load_suite` reads the file, applies command-line overrides, validates with pydantic (models in
schema.py), merges defaults into the cases and checks what one key alone cannot show: model widths
against the dataset, the group against the activation, teleport batches against the dataset size,
devices against the machine (model families: models.py; notes: notes.py; key paths: origin.py).
Every problem is one `UserError` sentence naming the file and the key path. `plan.expand` turns the
suite into the ordered, hashable plan.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from telebench.config import registry
from telebench.config.base import check_name
from telebench.config.errors import validation_error
from telebench.config.merge import merge_models
from telebench.config.overrides import Overrides, read_suite
from telebench.errors import UserError
from telebench.experiments.pairs.comparisons import check_comparisons
from telebench.experiments.pairs.memory import (
    DENSE_GROUPS,
    MAX_SHARE,
    describe_bytes,
    family_pair_bytes,
    machine_bytes,
    pair_bytes,
    parameters,
)
from telebench.experiments.pairs.models import check_mlp_groups, resolve_model
from telebench.experiments.pairs.notes import (
    note,
    note_lr_bumps,
    note_no_ops,
    note_schedules,
    note_seed_counts,
)
from telebench.experiments.pairs.origin import Origin, teleport_settings
from telebench.experiments.pairs.schema import (
    ArmConfig,
    BudgetConfig,
    Case,
    Suite,
    SuiteFile,
    TeleportConfig,
)
from telebench.experiments.pairs.spec import ARMS, TELEPORTING_ARMS
from telebench.training.step import budget_steps

__all__ = ["Suite", "Case", "load_suite", "teleport_settings"]


# ---- merging defaults into cases ------------------------------------------------------------------


def _apply_overrides(merged: dict[str, Any], ov: Overrides, origin: Origin) -> None:
    for key, option, value in (
        ("seeds", "--seeds", ov.seeds),
        ("devices", "--devices", ov.devices),
        ("eval_every", "--eval-every", ov.eval_every),
        ("budget", "--budget-steps", None if ov.budget_steps is None else BudgetConfig(steps=ov.budget_steps)),
    ):
        if value is not None:
            merged[key] = value
            origin.options[key] = option


# ---- checks across keys -----------------------------------------------------------------------------


def _fail(source: str, path: str, problem: str) -> UserError:
    return UserError(f"{source}: {path}: {problem}.")


def _check_model(source: str, case: Case, origin: Origin) -> None:
    widths = case.model.widths
    assert widths is not None
    try:
        shape = registry.dataset_shape(case.dataset.name, case.dataset.params)
    except (UserError, ValueError) as exc:  # the data module rejects parameters with a UserError
        raise _fail(source, origin.case_key("dataset"), str(exc).rstrip(".")) from None
    if shape is None:
        return
    n_in, n_out = shape
    path = origin.case_key("model", "widths")
    if registry.dataset_inputs(case.dataset.name, case.dataset.params)["kind"] == "tokens":
        raise _fail(source, origin.case_key("model"), f"dataset {case.dataset.name!r} gives token ids, which an "
                    "MLP cannot read; use `family: transformer`")
    if widths[0] != n_in:
        raise _fail(source, path, f"the first width must be the {n_in} input features of {case.dataset.name}, "
                                  f"got {widths[0]}; use e.g. [{n_in}, 32, {n_out}]")
    if widths[-1] != n_out:
        raise _fail(source, path, f"the last width must be the {n_out} outputs of {case.dataset.name}, "
                                  f"got {widths[-1]}; use e.g. [{n_in}, 32, {n_out}]")


def _check_family(source: str, case: Case, origin: Origin, ov: Overrides) -> None:
    """A CNN, ResNet, transformer or factory model builds and has a site for each group; an MLP has a site
    for each site group it names (docs/real-models.md)."""
    groups = [(teleport_settings(case, opt, arm).group, origin.teleport_key(j, k, "group"))
              for j, opt in enumerate(case.optimizers) for k, arm in enumerate(case.arms)
              if arm.kind in TELEPORTING_ARMS]
    if case.model.kind == "mlp":
        check_mlp_groups(source, case, groups)
        return
    info = resolve_model(source, case, origin.case_key, groups)
    need = family_pair_bytes(info.parameters, info.activations_per_sample, len(case.arms), case.batch_size,
                             case.eval_batch_size)
    _refuse_if_too_big(source, origin.case_key("model"), case, ov, need, info.parameters, "use a smaller model")


def _check_memory(source: str, case: Case, origin: Origin, ov: Overrides) -> None:
    """Refuse, before anything is allocated, a pair that would not fit in this machine's memory."""
    widths = case.model.widths
    assert widths is not None
    dense = any(teleport_settings(case, opt, arm).group in DENSE_GROUPS for opt in case.optimizers
                for arm in case.arms if arm.kind in TELEPORTING_ARMS)
    need = pair_bytes(widths, case.model.bias, len(case.arms), case.batch_size, case.eval_batch_size, dense)
    _refuse_if_too_big(source, origin.case_key("model", "widths"), case, ov, need,
                       parameters(widths, case.model.bias), "use narrower layers")


def _refuse_if_too_big(source: str, key: str, case: Case, ov: Overrides, need: int, n_params: int, fix: str) -> None:
    """One pair estimated above MAX_SHARE of this machine's memory is refused (unless --allow-large)."""
    have = machine_bytes()
    if have is None or need <= MAX_SHARE * have or ov.allow_large:
        return
    raise _fail(source, key, f"one pair of {len(case.arms)} arms needs about {describe_bytes(need)} "
                f"({n_params:,} parameters per model), more than half of this machine's {describe_bytes(have)}; "
                f"{fix}, or pass --allow-large to try")


def _label_optimizers(source: str, case: Case, origin: Origin) -> None:
    """Unlabelled optimizers are named after themselves, or name-lr<lr> when one name appears twice."""
    names = [o.name for o in case.optimizers]
    labelled = []
    for opt in case.optimizers:
        label = opt.label or (opt.name if names.count(opt.name) == 1 else f"{opt.name}-lr{opt.lr:g}")
        labelled.append(opt.model_copy(update={"label": label}))
    case.optimizers = labelled
    seen: dict[str, int] = {}
    for j, opt in enumerate(labelled):
        if opt.label in seen:
            raise _fail(source, origin.case_key("optimizers", j), f"optimizer label {opt.label!r} repeats "
                        f"optimizers[{seen[opt.label]}]; give each entry a distinct `label`")
        seen[str(opt.label)] = j


def _check_optimizer_kwargs(source: str, case: Case, origin: Origin) -> None:
    for j, opt in enumerate(case.optimizers):
        allowed = registry.optimizer_kwargs_allowed(opt.name)
        for key in opt.kwargs:
            if key == "lr":
                raise _fail(source, origin.case_key("optimizers", j, "kwargs"), "lr belongs in the optimizer's "
                            "own `lr` key, not in kwargs")
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise _fail(source, origin.case_key("optimizers", j, "kwargs") + f".{key}",
                            f"{opt.name} takes no argument {key!r}; {hint}allowed: {', '.join(allowed)}")


def _check_arms(source: str, case: Case, origin: Origin) -> None:
    seen: dict[str, int] = {}
    for k, arm in enumerate(case.arms):
        if arm.name in seen:
            raise _fail(source, origin.case_key("arms", k), f"arm label {arm.name!r} repeats arms[{seen[arm.name]}]; "
                        "give each arm a distinct name, e.g. {name: teleport-keep, kind: teleport}")
        seen[arm.name] = k


def _check_objective_params(source: str, tp: TeleportConfig, key: str) -> None:
    """Build the objective once, so a bad option stops the suite here, not at a trial's first teleport."""
    try:
        from telebench.symmetry import get_objective
    except ImportError:  # pragma: no cover - the symmetry package is part of telebench
        return
    try:
        get_objective(tp.objective, **dict(tp.objective_params or {}))
    except (ValueError, TypeError) as exc:
        raise _fail(source, key, f"{exc}".rstrip(".")) from None


def _check_batches_and_groups(source: str, case: Case, origin: Origin) -> None:
    """Batches must fit the training split; teleports must fit the group and the activation."""
    n_train = registry.dataset_train_size(case.dataset.name, case.dataset.params)
    if n_train is not None and case.batch_size > n_train:
        raise _fail(source, origin.case_key("batch_size"), f"{case.batch_size} is larger than the {n_train} "
                    f"training samples of {case.dataset.name}; use at most {n_train}")
    epochs = case.budget.epochs
    if n_train is not None and epochs is not None and budget_steps("epochs", epochs, n_train // case.batch_size) < 1:
        per_epoch = n_train // case.batch_size
        raise _fail(source, origin.case_key("budget", "epochs"), f"{epochs:g} epochs of {per_epoch} steps (batch "
                    f"{case.batch_size}) is no training step at all; give at least {1 / per_epoch:.3g} epochs")
    activation = case.model.activation
    for j, opt in enumerate(case.optimizers):
        for k, arm in enumerate(case.arms):
            if arm.kind not in TELEPORTING_ARMS:
                continue
            tp = teleport_settings(case, opt, arm)
            _check_objective_params(source, tp, origin.teleport_key(j, k, "objective_params"))
            fits = registry.GROUP_ACTIVATIONS.get(tp.group) if case.model.kind == "mlp" else None
            if fits is not None and activation not in fits:
                needs = f"{', '.join(fits[:-1])} or {fits[-1]}" if len(fits) > 1 else fits[0]
                group_key = origin.teleport_key(j, k, "group")
                activation_key = origin.case_key("model", "activation")
                if group_key.endswith("(default)"):
                    raise _fail(source, activation_key, f"{activation!r} does not fit the default teleport group "
                                f"{tp.group!r}, which needs {needs}; change the activation or set teleport.group")
                raise _fail(source, group_key, f"group {tp.group!r} needs a {needs} activation but "
                            f"{activation_key} is {activation!r}; change one of them")
            if tp.group == "gl-data" and case.model.kind == "mlp" and case.model.negative_slope <= 0:
                raise _fail(source, origin.case_key("model", "negative_slope"), "group 'gl-data' needs an "
                            "invertible activation, so a positive leaky_relu slope")
            if n_train is not None and tp.batch_size > n_train:
                raise _fail(source, origin.teleport_key(j, k, "batch_size"),
                            f"teleport batch {tp.batch_size} is larger than the {n_train} training samples of "
                            f"{case.dataset.name}; use at most {n_train}")


def _check_tuning(source: str, case: Case, origin: Origin) -> None:
    if case.tune_lr is not None and not case.calibration_seeds:
        raise _fail(source, origin.case_key("tune_lr"), "tuning the learning rates needs calibration seeds, on which "
                    "each grid lr is tried before the compared runs; add e.g. `calibration_seeds: [100, 101, 102]` "
                    "to the case or to defaults")


def _check_pretrain(source: str, case: Case, origin: Origin) -> None:
    """A pretraining holdout must leave the training split room for every batch (docs/suite-format.md#pretraining)."""
    n_train = registry.dataset_train_size(case.dataset.name, case.dataset.params)
    if case.pretrain is None or n_train is None:
        return
    need = max([case.batch_size] + [teleport_settings(case, opt, arm).batch_size for opt in case.optimizers
                                    for arm in case.arms if arm.kind in TELEPORTING_ARMS])
    holdout = case.pretrain.holdout
    if n_train - holdout < need:
        fix = f"use at most {n_train - need}" if n_train > need else "use smaller batches"
        raise _fail(source, origin.case_key("pretrain") + ".holdout", f"a holdout of {holdout} leaves "
                    f"{max(0, n_train - holdout)} of the {n_train} training samples of {case.dataset.name}, fewer "
                    f"than the largest batch ({need}) the arms train or teleport on; {fix}")


def _check_target(source: str, case: Case, origin: Origin, arms_option: bool) -> None:
    if case.target.value is None and not any(a.kind == "baseline" for a in case.arms):
        fix = "keep baseline in --arms" if arms_option else "add `baseline` to the arms"
        raise _fail(source, origin.case_key("target"), f"a baseline_final target needs a baseline arm; {fix} "
                    "or give an absolute `value`")
    if case.target.value is None and not case.calibration_seeds:
        raise _fail(source, origin.case_key("target"), "a baseline_final target needs calibration seeds, baseline "
                    "runs that set the target and are never compared (a target taken from the compared seeds "
                    "makes some of them miss it by construction); add e.g. `calibration_seeds: [100, 101, 102]` "
                    "to the case or to defaults, or give an absolute `value`")
    shared = sorted(set(case.seeds) & set(case.calibration_seeds))
    if shared:
        raise _fail(source, origin.case_key("calibration_seeds"), f"seeds {shared} are also compared seeds; "
                    "calibration seeds must be disjoint from `seeds`")


def _resolve_devices(source: str, case: Case, origin: Origin, notes: list[str]) -> None:
    """`auto` becomes cuda or cpu (with a note); CUDA asked for where there is none is an error."""
    wanted = case.devices
    count = registry.cuda_device_count() if any(d != "cpu" for d in wanted) else 0
    resolved: list[str] = []
    for name in wanted:
        if name == "auto":
            name = "cuda" if count else "cpu"
            if not count:
                note(notes, f"{origin.case_key('devices')}: auto runs on cpu, because no CUDA device is visible.")
        elif name.startswith("cuda"):
            index = int(name.partition(":")[2] or 0)
            if index >= count:
                have = f"only {count} CUDA device(s) exist" if count else "no CUDA device is visible"
                raise _fail(source, origin.case_key("devices"), f"{name!r} was asked for but {have}; use cpu, "
                            "or auto to run on CUDA only where it exists")
        if name not in resolved:
            resolved.append(name)
    case.devices = resolved


def _resolve_case(source: str, doc: SuiteFile, index: int, ov: Overrides, notes: list[str],
                  check_devices: bool) -> Case:
    origin = Origin(doc, index)
    merged = merge_models(doc.defaults, doc.cases[index], deep=("model", "teleport"))
    _apply_overrides(merged, ov, origin)
    for key in ("dataset", "model", "optimizers", "budget"):  # the settings with no built-in default
        if merged[key] is None:
            raise _fail(source, f"cases[{index}].{key}", f"is missing; set `{key}` in the case or under defaults "
                        "(see docs/suite-format.md)")
    case = Case(**merged)
    mlp = case.model.kind == "mlp"
    if mlp and case.model.widths is None:
        raise _fail(source, origin.case_key("model") + ".widths", "is missing; list the layer widths from the "
                    "input features to the outputs, e.g. [64, 32, 10], or name a `family` (cnn, resnet, transformer)")
    if mlp:
        _check_model(source, case, origin)
        _check_memory(source, case, origin, ov)
    _label_optimizers(source, case, origin)
    _check_optimizer_kwargs(source, case, origin)
    _check_arms(source, case, origin)
    if ov.arms is not None:
        origin.arms = _select_arms(case, ov.arms)
    _check_tuning(source, case, origin)
    _check_target(source, case, origin, ov.arms is not None)
    _check_batches_and_groups(source, case, origin)
    _check_pretrain(source, case, origin)
    _check_family(source, case, origin, ov)
    if check_devices:
        _resolve_devices(source, case, origin, notes)
    note_schedules(case, origin, notes)
    note_no_ops(case, origin, notes)
    note_lr_bumps(case, origin, notes)
    return case


def _check_arm_labels(source: str, doc: SuiteFile, wanted: list[str]) -> None:
    known = {a.name for settings in (doc.defaults, *doc.cases) for a in settings.arms}
    for label in wanted:
        if label not in known and label not in ARMS:
            choices = sorted(known | set(ARMS))
            near = difflib.get_close_matches(label, choices, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise UserError(f"--arms: {source} defines no arm {label!r}; {hint}choose from {', '.join(choices)}.")


def _select_arms(case: Case, wanted: list[str]) -> list[int | None]:
    """Keep the wanted labels in the given order, adding built-in kinds the case lacks.

    Returns each kept arm's index in the file (None for an added one), so errors still point there.
    """
    written = {a.name: k for k, a in enumerate(case.arms)}
    keep = [label for label in wanted if label in written or label in ARMS]
    arms = case.arms
    case.arms = [arms[written[label]] if label in written else ArmConfig(name=label) for label in keep]
    return [written.get(label) for label in keep]


def _select_cases(source: str, cases: list[Case], wanted: list[str]) -> list[Case]:
    names = [c.name for c in cases]
    for name in wanted:
        if name not in names:
            try:
                check_name("case", name, tuple(names))
            except ValueError as exc:
                raise UserError(f"--cases: {source} has {exc}.") from None
    return [c for c in cases if c.name in wanted]


def load_suite(path: str | Path, overrides: Overrides | None = None, *, check_devices: bool = True) -> Suite:
    """Read, override, validate and resolve a `kind: train` suite; one UserError sentence on any problem.

    `check_devices=False` skips resolving `auto` and checking CUDA (for planning on another machine).
    Any kind of suite loads through `telebench.experiments.registry.load_config`.
    """
    ov = overrides or Overrides()
    path = Path(path)
    raw, kind = read_suite(path, ov)
    if kind != "train":
        raise UserError(f"{path}: is a `kind: {kind}` suite, not a train suite; `telebench run {path}` runs it.")
    return resolve_suite(path, raw, ov, check_devices)


def resolve_suite(path: Path, raw: dict[str, Any], ov: Overrides, check_devices: bool) -> Suite:
    """Validate a train suite's YAML (with --set applied) and resolve its cases against defaults and options."""
    source = str(path)
    try:
        doc = SuiteFile.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(source, exc, SuiteFile) from None
    if ov.arms is not None:
        _check_arm_labels(source, doc, ov.arms)
    notes: list[str] = []
    cases = [_resolve_case(source, doc, i, ov, notes, check_devices) for i in range(len(doc.cases))]
    first: dict[str, int] = {}
    for i, case in enumerate(cases):
        if case.name in first:
            raise _fail(source, f"cases[{i}].name", f"case name {case.name!r} repeats cases[{first[case.name]}]; "
                        "give each case a distinct name")
        first[case.name] = i
    check_comparisons(source, doc.analysis, cases, ov.arms)
    if ov.cases is not None:
        cases = _select_cases(source, cases, ov.cases)
    note_seed_counts(cases, notes)
    return Suite(name=doc.name, description=doc.description, defaults=doc.defaults, cases=cases,
                 executor=doc.executor, source=path, notes=notes, analysis=doc.analysis)

