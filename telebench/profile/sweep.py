"""How a teleport's cost grows: time it along one axis and fit the growth exponent on a log-log scale.

Axes change one thing about the subject:

* ``width=16,64,...``: every hidden layer gets that width (input and output stay);
* ``depth=1,2,...``: that many hidden layers, each as wide as the model's first hidden layer;
* ``batch=200,2000,...``: the teleport batch and the training batch.

At each point the teleport, a gradient evaluation and a training step are timed as in the main
measurement, and the fastest sample is kept (the least disturbed on a shared machine). The exponent
k of time ∝ xᵏ is the slope of a least-squares line through (log x, log time).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np

from telebench.errors import UserError
from telebench.profile.subject import ProfileSubject, with_batch, with_model
from telebench.profile.timing import measure
from telebench.profile.workload import Workload, load_data
from telebench.training.dataset_bundle import DatasetBundle

AXES = ("width", "depth", "batch")
CURVES = ("teleport", "gradient", "train_step")


@dataclass(frozen=True)
class Sweep:
    axis: str
    values: tuple[int, ...]

    @property
    def spec(self) -> str:
        return f"{self.axis}={','.join(map(str, self.values))}"


@dataclass
class SweepPoint:
    value: int
    teleport_s: float
    gradient_s: float
    train_step_s: float

    @property
    def grad_evals(self) -> float:
        return self.teleport_s / self.gradient_s


@dataclass
class Fit:
    """time ≈ exp(intercept) · x^exponent; r2 is the fit's coefficient of determination in log space."""

    exponent: float
    intercept: float
    r2: float


@dataclass
class SweepResult:
    axis: str
    points: list[SweepPoint]
    fits: dict[str, Fit] = field(default_factory=dict)  # per curve in CURVES
    plot: str | None = None  # file name of the plot, relative to the report


def parse_sweep(text: str) -> Sweep:
    """ "width=16,64,256" -> Sweep("width", (16, 64, 256)); a UserError naming the grammar otherwise."""
    grammar = (
        "use AXIS=V1,V2,... with AXIS one of width, depth, batch and at least two positive integers, "
        "e.g. --sweep width=16,64,256"
    )
    axis, sep, rest = text.partition("=")
    axis = axis.strip()
    if not sep:
        raise UserError(f"--sweep {text!r} has no '='; {grammar}.")
    if axis not in AXES:
        near = difflib.get_close_matches(axis, AXES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(f"--sweep {text!r}: unknown axis {axis!r}{hint}; {grammar}.")
    parts = [p.strip() for p in rest.split(",")]
    if any(not p.isdigit() or int(p) < 1 for p in parts):
        raise UserError(f"--sweep {text!r}: the values must be positive integers; {grammar}.")
    values = tuple(dict.fromkeys(int(p) for p in parts))
    if len(values) < 2:
        raise UserError(f"--sweep {text!r}: a growth exponent needs at least two distinct values; {grammar}.")
    return Sweep(axis, tuple(sorted(values)))


def parse_sweeps(texts: list[str]) -> list[Sweep]:
    sweeps = [parse_sweep(t) for t in texts]
    axes = [s.axis for s in sweeps]
    for axis in AXES:
        if axes.count(axis) > 1:
            raise UserError(
                f"--sweep gives the axis {axis!r} twice; list all its values in one --sweep {axis}=...."
            )
    return sweeps


def point_subject(subject: ProfileSubject, axis: str, value: int) -> ProfileSubject:
    widths = subject.model.widths
    if axis == "width":
        return with_model(subject, (widths[0], *[value] * (len(widths) - 2), widths[-1]))
    if axis == "depth":
        hidden = widths[1] if len(widths) > 2 else widths[-1]
        return with_model(subject, (widths[0], *[hidden] * value, widths[-1]))
    if axis == "batch":
        return with_batch(subject, value)
    raise ValueError(f"unknown sweep axis {axis!r}")


def fit_exponent(xs: list[float], ys: list[float]) -> Fit:
    """Least-squares line through (log x, log y) with numpy.polyfit."""
    lx, ly = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    spread = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / spread if spread > 0 else math.nan
    return Fit(float(slope), float(intercept), r2)


def run_sweep(
    subject: ProfileSubject,
    sweep: Sweep,
    warmup: int,
    repeat: int,
    data: DatasetBundle | None = None,
    data_root: str | None = None,
) -> SweepResult:
    """Time the subject at every point of ``sweep`` (the fastest of ``repeat`` samples) and fit each curve."""
    bundle = data if data is not None else load_data(subject, data_root)
    points = []
    for value in sweep.values:
        workload = Workload.build(point_subject(subject, sweep.axis, value), bundle)
        workload.warm_up(warmup)
        timings = measure(workload, repeat)
        points.append(SweepPoint(value, timings.teleport.min, timings.gradient.min, timings.train_step.min))
    xs = [float(p.value) for p in points]
    fits = {
        "teleport": fit_exponent(xs, [p.teleport_s for p in points]),
        "gradient": fit_exponent(xs, [p.gradient_s for p in points]),
        "train_step": fit_exponent(xs, [p.train_step_s for p in points]),
    }
    return SweepResult(sweep.axis, points, fits)
