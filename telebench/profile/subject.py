"""What `telebench profile` measures: one model, one real batch and one teleport setting, as plain data.

A subject comes from a suite case (the settings of its teleport arm, its model, dataset, optimizer and
batch size) or from command-line options. Every check that can fail on the user's input happens
here, before any timing starts, and fails with one sentence naming the option or key and the fix.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from telebench.errors import UserError
from telebench.experiments.pairs.spec import TeleportSpec, TrialSpec
from telebench.training.specs import DatasetSpec, ModelSpec, OptimizerSpec, freeze

_WIDTHS = re.compile(r"^\d+(-\d+)+$")
SYNTHETIC_DATASETS = {"synthetic-classification": "n_classes", "synthetic-regression": "n_outputs"}
SYNTHETIC_MIN_TRAIN = 2048  # synthetic data sets made for a profile hold at least this many examples


@dataclass(frozen=True)
class ProfileSubject:
    """One thing to profile: a model, the dataset its batches come from, a teleport setting, and the
    optimizer and batch size of the training step a teleport is weighed against."""

    name: str
    model: ModelSpec
    dataset: DatasetSpec
    teleport: TeleportSpec
    optimizer: OptimizerSpec
    train_batch: int
    device: str
    seed: int = 0

    @property
    def description(self) -> str:
        widths = "-".join(map(str, self.model.widths))
        tp = self.teleport
        return (
            f"{widths} {self.model.activation}, {tp.group} {tp.objective} {tp.steps} steps at lr {tp.lr:g}, "
            f"teleport batch {tp.batch_size}, train batch {self.train_batch}, "
            f"{self.dataset.name}, {self.device}"
        )


def parse_widths(text: str) -> tuple[int, ...]:
    """ "784-16-10-10" -> (784, 16, 10, 10)."""
    cleaned = text.strip()
    if not _WIDTHS.match(cleaned) or any(int(w) < 1 for w in cleaned.split("-")):
        raise UserError(
            f"--model {text!r} is not a list of layer widths; give positive integers joined by '-', "
            "input and output included, e.g. --model 784-16-10-10."
        )
    return tuple(int(w) for w in cleaned.split("-"))


def check_device(device: str, option: str = "--device") -> str:
    """The device name, after checking that it exists here (CUDA asked for without one is a user error)."""
    from telebench.training.devices import resolve_device

    text = device.strip().lower()
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"{option} {device}: no CUDA device is available to torch {torch.__version__} on this machine; "
            "use --device cpu, or run on a machine with a GPU."
        )
    return str(resolve_device(text))


def _unknown(option: str, value: str, allowed: list[str]) -> UserError:
    near = difflib.get_close_matches(value, allowed, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return UserError(f"{option} {value!r} is unknown; {hint}choose one of {', '.join(allowed)}.")


def check_subject(subject: ProfileSubject, *, batches: tuple[int, ...] = ()) -> None:
    """Fail early, in one sentence, on a group, objective, activation, dataset or batch that cannot work.

    ``batches`` are further batch sizes a sweep will use; each must fit the training split too.
    """
    from telebench.symmetry import GROUPS, OBJECTIVES, SymmetryError, check_model
    from telebench.training.datasets import dataset_shape, dataset_sizes
    from telebench.training.models import build_mlp
    from telebench.training.optimizers import optimizer_kwargs_allowed

    tp = subject.teleport
    if tp.group not in GROUPS:
        raise _unknown("--group", tp.group, list(GROUPS))
    if tp.objective not in OBJECTIVES:
        raise _unknown("--objective", tp.objective, list(OBJECTIVES))
    optimizer_kwargs_allowed(subject.optimizer.name)  # a UserError naming the choices for an unknown optimizer
    model = build_mlp(subject.model, seed=0)  # raises a UserError for a bad activation or widths
    try:
        check_model(model, tp.group)
    except SymmetryError as exc:
        raise UserError(f"--group {tp.group}: {str(exc).rstrip('.')}.") from None
    n_features, n_outputs = dataset_shape(subject.dataset.name, subject.dataset.params)
    widths = subject.model.widths
    if (widths[0], widths[-1]) != (n_features, n_outputs):
        raise UserError(
            f"--model {'-'.join(map(str, widths))} does not fit dataset {subject.dataset.name!r}, which has "
            f"{n_features} input features and {n_outputs} outputs; make the first and last widths match."
        )
    n_train = dataset_sizes(subject.dataset.name, subject.dataset.params)[0]
    for size in (tp.batch_size, subject.train_batch, *batches):
        if size > n_train:
            raise UserError(
                f"batch size {size} exceeds the {n_train} training examples of dataset "
                f"{subject.dataset.name!r}; "
                "use a smaller --batch or --sweep batch value."
            )


def synthetic_dataset(name: str, widths: tuple[int, ...], largest_batch: int, seed: int) -> DatasetSpec:
    """A dataset spec for the command-line form: synthetic data shaped by the model, large enough for every
    batch; any other dataset is taken as it is and must fit the model."""
    from telebench.training.datasets import dataset_info

    dataset_info(name)  # a UserError with the nearest name for an unknown dataset
    outputs = SYNTHETIC_DATASETS.get(name)
    if outputs is None:
        return DatasetSpec(name)
    params = {
        "n_features": widths[0],
        outputs: widths[-1],
        "n_train": max(SYNTHETIC_MIN_TRAIN, largest_batch),
        "seed": seed,
    }
    return DatasetSpec(name, freeze(params))


@dataclass(frozen=True)
class SubjectOptions:
    """The command-line form's settings (``telebench profile --model ...``), with its defaults."""

    model: str
    activation: str = "leaky_relu"
    group: str = "rescale"
    objective: str = "grad_norm"
    direction: str = "increase"
    steps: int = 10
    lr: float = 1e-2
    batch: int = 200
    train_batch: int | None = None  # None: the teleport batch
    optimizer: str = "sgd"
    train_lr: float = 1e-2
    dataset: str = "synthetic-classification"
    device: str = "cpu"
    seed: int = 0


def subject_from_options(opts: SubjectOptions, largest_batch: int = 0) -> ProfileSubject:
    """A subject from command-line options; synthetic data holds at least ``largest_batch`` examples."""
    widths = parse_widths(opts.model)
    for option, value in (
        ("--steps", opts.steps),
        ("--batch", opts.batch),
        ("--train-batch", opts.train_batch),
    ):
        if value is not None and value < 1:
            raise UserError(f"{option} must be a positive integer, got {value}.")
    for option, rate in (("--lr", opts.lr), ("--train-lr", opts.train_lr)):
        if not rate > 0:
            raise UserError(f"{option} must be a positive number, got {rate}.")
    if opts.direction not in ("increase", "decrease"):
        raise _unknown("--direction", opts.direction, ["increase", "decrease"])
    train_batch = opts.train_batch or opts.batch
    teleport = TeleportSpec(
        group=opts.group,
        objective=opts.objective,
        direction=opts.direction,
        steps=opts.steps,
        lr=opts.lr,
        batch_size=opts.batch,
    )
    return ProfileSubject(
        name=f"{opts.model} {opts.activation} {opts.group} batch {opts.batch}",
        model=ModelSpec(widths=widths, activation=opts.activation),
        dataset=synthetic_dataset(
            opts.dataset, widths, max(opts.batch, train_batch, largest_batch), opts.seed
        ),
        teleport=teleport,
        optimizer=OptimizerSpec(opts.optimizer, opts.train_lr),
        train_batch=train_batch,
        device=check_device(opts.device),
        seed=opts.seed,
    )


def subjects_from_suite(path: str | Path, case: str | None, device: str | None) -> list[ProfileSubject]:
    """One subject per case (or just ``case``): the case's first teleporting arm with its first optimizer.

    ``device`` replaces the case's device (its first one otherwise).
    """
    from telebench.experiments.pairs.load import load_suite
    from telebench.experiments.pairs.plan import expand

    suite = load_suite(path, check_devices=False)  # devices are checked below, against --device
    names = [c.name for c in suite.cases]
    if case is not None and case not in names:
        raise _unknown("--case", case, names)
    chosen: dict[str, TrialSpec] = {}
    for spec in expand(suite):
        if spec.teleport is not None and spec.arm_kind in ("teleport", "random-teleport"):
            chosen.setdefault(spec.case, spec)
    wanted = [n for n in names if n in chosen and (case is None or n == case)]
    if not wanted:
        if case is not None:
            raise UserError(
                f"{path}: case {case!r} has no teleport arm to profile; add `teleport` to its arms."
            )
        raise UserError(f"{path}: no case has a teleport arm to profile; add `teleport` to a case's arms.")
    subjects = []
    for name in wanted:
        spec = chosen[name]
        assert spec.teleport is not None
        origin = "--device" if device else f"{path} case {name!r} device"
        subjects.append(
            ProfileSubject(
                name=name,
                model=spec.model,
                dataset=spec.dataset,
                teleport=spec.teleport,
                optimizer=spec.optimizer,
                train_batch=spec.batch_size,
                device=check_device(device or spec.device, origin),
                seed=spec.seed,
            )
        )
    return subjects


def with_model(subject: ProfileSubject, widths: tuple[int, ...]) -> ProfileSubject:
    return replace(subject, model=replace(subject.model, widths=widths))


def with_batch(subject: ProfileSubject, batch: int) -> ProfileSubject:
    """The teleport batch and the training batch both set to ``batch``."""
    return replace(subject, teleport=replace(subject.teleport, batch_size=batch), train_batch=batch)
