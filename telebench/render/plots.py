"""Training curves per (case, optimizer, device): the target metric against step and training clock.

One line per arm: the median over seeds on a common grid, with a min–max band (a handful of seeds
makes quartiles meaningless). Teleports are ticks along the bottom, the target a dashed line.
Uses matplotlib's object API with the Agg canvas, so no pyplot global state and no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import LogFormatter
from matplotlib.transforms import blended_transform_factory

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
    fig = new_figure(11, 4.2, layout="constrained")
    ax_step, ax_time = fig.subplots(1, 2, sharey=True)
    colors = [f"C{i}" for i in range(10)]
    styles = ["-", "--", "-.", ":"]  # arms that coincide stay visible
    all_y: list[np.ndarray] = []
    for i, (arm, trials) in enumerate(arms.items()):
        color = colors[i % len(colors)]
        ok = [t for t in trials if t.get("status") == "ok"]
        steps, times = teleport_positions(ok)
        for ax, x_key, exact, ticks in (
            (ax_step, "step", True, steps),
            (ax_time, "train_clock_s", False, times),
        ):
            curves = [c for t in ok if (c := curve(t.get("history") or [], x_key, metric)) is not None]
            b = band(curves, exact)
            if b is None:
                continue
            all_y.append(b.low)
            ax.plot(
                b.x, b.median, color=color, ls=styles[i % len(styles)], lw=1.8, label=f"{arm} (n={b.n_seeds})"
            )
            ax.fill_between(b.x, b.low, b.high, color=color, alpha=0.18, lw=0)
            if ticks.size:
                trans = blended_transform_factory(ax.transData, ax.transAxes)
                ax.plot(
                    ticks,
                    np.full(ticks.size, 0.03 + 0.045 * i),
                    transform=trans,
                    linestyle="none",
                    marker="|",
                    markersize=9,
                    markeredgewidth=1.6,
                    color=color,
                )
    for ax, xlabel in ((ax_step, "step"), (ax_time, "training clock (s)")):
        if target is not None:
            ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.3g}")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    ax_step.set_ylabel(metric)
    if all_y and "accuracy" not in metric and min(float(y.min()) for y in all_y) > 0:
        ax_step.set_yscale("log")
        for axis in (ax_step.yaxis, ax_time.yaxis):  # plain numbers (0.6, 2), not 6×10⁻¹
            axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
            axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax_step.legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}\nline: median over seeds · band: min–max · ticks: teleports", fontsize=10)
    return save_figure(fig, path)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
