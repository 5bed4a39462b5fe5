"""`telebench profile`: its command-line options, checked and turned into telebench.profile's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from telebench.errors import UserError
from telebench.render.console import make_console


@dataclass(frozen=True)
class ProfileArgs:
    """Every `telebench profile` option, as parsed; `run` checks how they combine and profiles."""

    suite: str | None
    case: str | None
    device: str | None
    out: str | None
    model: str | None
    activation: str
    group: str
    objective: str
    direction: str
    steps: int
    lr: float
    batch: int
    train_batch: int | None
    optimizer: str
    train_lr: float
    dataset: str
    seed: int
    warmup: int
    repeat: int
    sweep: list[str] | None
    no_trace: bool
    compile_: bool
    compile_backend: str
    top: int
    threads: int | None
    data_root: str | None

    def run(self) -> None:
        from telebench.profile.command import SuiteSource, run_profile
        from telebench.profile.run import ProfileOptions
        from telebench.profile.subject import SubjectOptions
        from telebench.profile.sweep import parse_sweeps

        if self.suite is None and self.model is None:
            raise UserError("telebench profile needs a SUITE file or --model WIDTHS, e.g. --model 784-16-10-10.")
        if self.suite is not None and self.model is not None:
            raise UserError("give either a SUITE file or --model, not both; a suite's cases name their models.")
        if self.suite is None and self.case is not None:
            raise UserError("--case picks a case of a SUITE; give the suite file too, or drop --case.")
        source: SuiteSource | SubjectOptions
        if self.suite is not None:
            source = SuiteSource(self.suite, self.case, self.device)
        else:
            assert self.model is not None
            source = SubjectOptions(
                model=self.model, activation=self.activation, group=self.group, objective=self.objective,
                direction=self.direction, steps=self.steps, lr=self.lr, batch=self.batch,
                train_batch=self.train_batch, optimizer=self.optimizer, train_lr=self.train_lr,
                dataset=self.dataset, device=self.device or "cpu", seed=self.seed,
            )
        options = ProfileOptions(
            warmup=self.warmup, repeat=self.repeat, profiler=not self.no_trace, compile=self.compile_,
            compile_backend=self.compile_backend, sweeps=tuple(parse_sweeps(self.sweep or [])), top=self.top,
            data_root=self.data_root,
        )
        run_profile(source, options, Path(self.out) if self.out else None, self.threads, make_console())


def profile_command(
    suite: Annotated[str | None, typer.Argument(help="A suite YAML: profile each case's teleport arm on its model and data.")] = None,
    case: Annotated[str | None, typer.Option("--case", help="Profile only this case of SUITE.")] = None,
    device: Annotated[str | None, typer.Option(
        "--devices", help="cpu or cuda \\[default: the case's device, or cpu]; one device, as in `run --devices`.")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Output folder \\[default: reports/profile-<timestamp>].")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Without SUITE: layer widths, e.g. 784-16-10-10.")] = None,
    activation: Annotated[str, typer.Option("--activation", help="relu, leaky_relu, identity, tanh ...")] = "leaky_relu",
    group: Annotated[str, typer.Option("--group", help="rescale, linear or gl-data.")] = "rescale",
    objective: Annotated[str, typer.Option("--objective", help="The teleport objective.")] = "grad_norm",
    direction: Annotated[str, typer.Option("--direction", help="increase or decrease the objective.")] = "increase",
    steps: Annotated[int, typer.Option("--steps", help="Search steps per teleport.")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="Teleport learning rate.")] = 1e-2,
    batch: Annotated[int, typer.Option("--batch", help="Teleport batch (also the gradient-evaluation batch).")] = 200,
    train_batch: Annotated[int | None, typer.Option("--train-batch", help="Training-step batch \\[default: --batch].")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", help="Optimizer of the training step.")] = "sgd",
    train_lr: Annotated[float, typer.Option("--train-lr", help="Learning rate of the training step.")] = 1e-2,
    dataset: Annotated[str, typer.Option("--dataset", help="Where the batches come from.")] = "synthetic-classification",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the model and the batches.")] = 0,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed warm-up rounds before measuring.")] = 2,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Measured teleports (and samples of the other timings).")] = 5,
    sweep: Annotated[list[str] | None, typer.Option(
        "--sweep", help="Scaling sweep AXIS=V1,V2,... with AXIS width, depth or batch; repeatable.")] = None,
    no_trace: Annotated[bool, typer.Option("--no-trace", help="Plain timings only: no profiler, no phases, no trace.json.")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="Also time torch.compile'd parts, compile time apart.")] = False,
    compile_backend: Annotated[str, typer.Option("--compile-backend", help="torch.compile backend for --compile.")] = "inductor",
    top: Annotated[int, typer.Option("--top", min=1, help="Operators listed per table.")] = 15,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads \\[default: 1, as `telebench run`].")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Folder holding dataset files.")] = None,
    device_alias: Annotated[str | None, typer.Option("--device", hidden=True, help="The old name of --devices.")] = None,
) -> None:
    """Where a teleport's time and memory go, what it costs in gradient evaluations and training steps,
    and how that grows with width, depth or batch."""
    options = dict(locals())
    options["device"] = _one_device(options.pop("device_alias"), device)
    ProfileArgs(**options).run()


def _one_device(alias: str | None, devices: str | None) -> str | None:
    """--devices, or its old name --device; profile measures on one device."""
    if alias is not None and devices is not None and alias != devices:
        raise UserError(f"--device {alias} and --devices {devices} disagree; pass one, e.g. --devices {devices}.")
    device = devices if devices is not None else alias
    if device is not None and "," in device:
        raise UserError(f"--devices {device}: profile measures on one device; pass one, e.g. --devices cpu.")
    return device
