"""The scaling plot: teleport, gradient-evaluation and training-step time against the swept axis, log-log,
with each fitted power law dashed. Matplotlib's object API on the Agg canvas: no display, no pyplot state."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from telebench.profile.sweep import SweepResult
from telebench.render.figures import new_figure, save_figure

STYLE = {
    "teleport": ("teleport", "tab:red", "o"),
    "gradient": ("gradient evaluation (forward+backward)", "tab:blue", "s"),
    "train_step": ("training step", "tab:gray", "^"),
}


def plot_sweep(result: SweepResult, path: Path, title: str) -> Path:
    xs = np.array([p.value for p in result.points], dtype=float)
    curves = {
        "teleport": [p.teleport_s for p in result.points],
        "gradient": [p.gradient_s for p in result.points],
        "train_step": [p.train_step_s for p in result.points],
    }
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    grid = np.geomspace(xs.min(), xs.max(), 50)
    for key, ys in curves.items():
        label, colour, marker = STYLE[key]
        fit = result.fits.get(key)
        text = f"{label}, k = {fit.exponent:.2f}" if fit else label
        ax.plot(xs, np.asarray(ys) * 1e3, marker=marker, color=colour, label=text, linewidth=1.5)
        if fit is not None:
            ax.plot(grid, np.exp(fit.intercept) * grid**fit.exponent * 1e3, "--", color=colour, linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{int(x)}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(result.axis)
    ax.set_ylabel("milliseconds per call (fastest sample)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
