"""Training curves per (case, optimizer, device): the target metric against step and training clock.

Per arm, every seed is drawn as a thin line to its own end, so a slow seed's tail (where a
time-to-target of the table may lie) is never cut off; the median over seeds is a thick line on the
range every seed still covers (a handful of seeds makes quartiles meaningless, and a median of the
seeds that happen to be left would jump). The target is a dashed line, and each arm's median time
(and steps) to target, the table's figure, a marker on it; a median known only as a bound ("≥") is a
▷ at its lower end. Teleports are ticks along the bottom. Uses matplotlib's object API with the Agg
canvas, so no pyplot global state and no display needed.

Artists carry gids (``seed:<arm>:<seed>``, ``median:<arm>``, ``to-target:<arm>``, ``target``), so
tests and tools can read what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter
from matplotlib.transforms import blended_transform_factory

from telebench.analysis.summary import describe_censored
from telebench.render.figures import new_figure, save_figure

Curve = tuple[np.ndarray, np.ndarray]  # (x, y), x increasing


class PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, written plainly (0.6, 2) rather than as 6e-01."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


@dataclass(frozen=True)
class Band:
    x: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_seeds: int


def curve(history: Sequence[dict[str, Any]], x_key: str, y_key: str) -> Curve | None:
    """The finite (x, y) points of one trial's history, sorted by x; None if fewer than 2."""
    pts = [(row.get(x_key), row.get(y_key)) for row in history]
    arr = np.array([(x, y) for x, y in pts if _is_num(x) and _is_num(y)], dtype=float).reshape(-1, 2)
    arr = arr[np.isfinite(arr).all(axis=1)]
    if len(arr) < 2:
        return None
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    return arr[:, 0], arr[:, 1]


def band(curves: Sequence[Curve], exact_grid: bool) -> Band | None:
    """Median and min–max of `curves` on the x-range all of them cover.

    With `exact_grid` (steps: every seed evaluates at the same steps) the grid is the union of the
    evaluation points, so no value is invented; otherwise (clock seconds) 200 evenly spaced points
    with linear interpolation.
    """
    if not curves:
        return None
    start = max(float(x[0]) for x, _ in curves)
    end = min(float(x[-1]) for x, _ in curves)
    if end <= start:
        return None
    if exact_grid:
        grid = np.unique(np.concatenate([x for x, _ in curves]))
        grid = grid[(grid >= start) & (grid <= end)]
    else:
        grid = np.linspace(start, end, 200)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return Band(grid, np.median(ys, axis=0), ys.min(axis=0), ys.max(axis=0), len(curves))


def teleport_positions(trials: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Steps of the teleports, accepted or not (first seed's schedule), and their median training clock."""
    if not trials:
        return np.array([]), np.array([])
    steps = np.array(
        sorted({r["step"] for r in trials[0].get("teleports") or [] if _is_num(r.get("step"))}), dtype=float
    )
    clocks = [c for t in trials if (c := curve(t.get("history") or [], "step", "train_clock_s")) is not None]
    if steps.size == 0 or not clocks:
        return steps, np.array([])
    times = np.median(np.stack([np.interp(steps, x, y) for x, y in clocks]), axis=0)
    return steps, times


def plot_group(
    arms: dict[str, list[dict[str, Any]]],
    metric: str,
    target: float | None,
    title: str,
    path: Path,
) -> Path:
    """Write a two-panel PNG (metric vs step, metric vs training-clock seconds) for one comparison.

    `arms` maps arm label → its trials, baseline first; only `ok` trials are drawn.
    """
    return save_figure(draw_group(arms, metric, target, title), path)


def draw_group(arms: dict[str, list[dict[str, Any]]], metric: str, target: float | None, title: str) -> Figure:
    """The figure `plot_group` saves: axes[0] against step, axes[1] against the training clock."""
    # Fixed margins, not a layout engine: one draw per save instead of two (a layout engine draws the
    # figure once more to measure it), which halves a report's plotting time.
    fig = new_figure(11, 4.2)
    fig.subplots_adjust(left=0.065, right=0.99, bottom=0.12, top=0.85, wspace=0.04)
    ax_step, ax_time = fig.subplots(1, 2, sharey=True)
    all_y: list[np.ndarray] = []
    for i, (arm, trials) in enumerate(arms.items()):
        style = ArmStyle(arm, f"C{i % 10}", ("-", "--", "-.", ":")[i % 4], i)  # arms that coincide stay visible
        ok = [t for t in trials if t.get("status") == "ok"]
        steps, times = teleport_positions(ok)
        for ax, x_key, exact, ticks, cost in (
            (ax_step, "step", True, steps, "steps_to_target"),
            (ax_time, "train_clock_s", False, times, "time_to_target_s"),
        ):
            all_y += _draw_arm(ax, style, ok, x_key, metric, exact)
            _draw_ticks(ax, style, ticks)
            if target is not None:
                _draw_to_target(ax, style, median_to_target(trials, cost), target)
    for ax, xlabel in ((ax_step, "step"), (ax_time, "training clock (s)")):
        if target is not None:
            ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.3g}", gid="target")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    ax_step.set_ylabel(metric)
    if all_y and "accuracy" not in metric and min(float(y.min()) for y in all_y) > 0:
        ax_step.set_yscale("log")
        for axis in (ax_step.yaxis, ax_time.yaxis):  # plain numbers (0.6, 2), not 6×10⁻¹
            axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
            axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax_step.legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}\nthick: median over seeds while every seed runs · thin: each seed · "
                 "◆: median to target (▷: at least) · ticks: teleports", fontsize=10)
    return fig


@dataclass(frozen=True)
class ArmStyle:
    label: str
    color: str
    line: str
    index: int


def _draw_arm(ax: Axes, style: ArmStyle, ok: list[dict[str, Any]], x_key: str, metric: str,
              exact: bool) -> list[np.ndarray]:
    """Each seed thin, to its end; the median thick where every seed runs. Returns the y values drawn."""
    curves = [(t, c) for t in ok if (c := curve(t.get("history") or [], x_key, metric)) is not None]
    for trial, (x, y) in curves:
        ax.plot(x, y, color=style.color, ls=style.line, lw=0.7, alpha=0.35,
                gid=f"seed:{style.label}:{trial.get('seed')}")
    b = band([c for _, c in curves], exact)
    if b is not None:
        ax.plot(b.x, b.median, color=style.color, ls=style.line, lw=1.9, label=f"{style.label} (n={b.n_seeds})",
                gid=f"median:{style.label}")
    return [y for _, (_, y) in curves]


def _draw_ticks(ax: Axes, style: ArmStyle, ticks: np.ndarray) -> None:
    if ticks.size:
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(ticks, np.full(ticks.size, 0.03 + 0.045 * style.index), transform=trans, linestyle="none",
                marker="|", markersize=9, markeredgewidth=1.6, color=style.color, gid=f"teleports:{style.label}")


def _draw_to_target(ax: Axes, style: ArmStyle, at: tuple[float, bool] | None, target: float) -> None:
    """A marker on the target line at the arm's median cost to reach it (▷ when only a lower bound)."""
    if at is None:
        return
    x, exact = at
    ax.plot([x], [target], linestyle="none", marker="D" if exact else ">", markersize=7, color=style.color,
            markeredgecolor="black", markeredgewidth=0.6, zorder=5, gid=f"to-target:{style.label}")
    ax.axvline(x, color=style.color, ls=":", lw=0.9, alpha=0.8, gid=f"to-target-line:{style.label}")


def median_to_target(trials: Sequence[dict[str, Any]], field: str) -> tuple[float, bool] | None:
    """The table's median cost to target (`time_to_target_s` or `steps_to_target`) over the trials that
    ran, misses censored at what they spent: (value, True), or (its lower bound, False) when the misses
    leave only a bound; None when no trial ran or the bound is 0."""
    ran = [t for t in trials if t.get("status") != "skipped"]
    if not ran:
        return None
    spent_field = "train_clock_s" if field == "time_to_target_s" else "steps"
    values = [_finite(t.get(field)) for t in ran]
    cost = describe_censored(values, [_spent(t, spent_field) for t in ran])
    if cost.get("median") is not None:
        return float(cost["median"]), True
    low = cost.get("median_low")
    return (float(low), False) if low else None


def _spent(trial: dict[str, Any], field: str) -> float | None:
    """What a trial spent (a miss's censoring point): the field, else its last evaluation's."""
    value = _finite(trial.get(field))
    if value is not None:
        return value
    last = (trial.get("history") or [{}])[-1]
    return _finite(last.get("train_clock_s" if field == "train_clock_s" else "step"))


def _finite(x: Any) -> float | None:
    return float(x) if _is_num(x) and math.isfinite(x) else None


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
