"""The training-curve plots: every seed drawn to its end, the median only where all seeds run, and the
table's time (and steps) to target marked on the target line. Reads the artists of the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from synthetic_results import make_results, make_trial

from telebench.render.plots import draw_group, plot_group

TARGET = {"metric": "train_loss", "kind": "baseline-final", "value": None, "slack": 0.05}
LENGTHS = (100, 200, 300)  # steps per seed: the seeds end at different clocks


@pytest.fixture(scope="module")
def results() -> dict:
    trials = []
    for seed, n in enumerate(LENGTHS):
        trials.append(make_trial(arm="baseline", rate=0.01, seed=seed, n_steps=n, target=TARGET, noise=0.01))
        trials.append(make_trial(arm="teleport", rate=0.02, teleport_steps=(0, 50), teleport_s=0.05, seed=seed,
                                 n_steps=n, target=TARGET, noise=0.01))
    return make_results(trials)


def by_arm(results: dict) -> dict[str, list[dict]]:
    arms: dict[str, list[dict]] = {}
    for t in results["trials"]:
        arms.setdefault(t["arm"], []).append(t)
    return arms


def lines(ax: Axes, prefix: str) -> dict[str, Line2D]:
    return {str(line.get_gid()): line for line in ax.get_lines() if str(line.get_gid()).startswith(prefix)}


def xs(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_xdata(), dtype=float)


def ys(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_ydata(), dtype=float)


def test_every_seed_is_drawn_to_its_end_and_the_median_where_all_run(results: dict) -> None:
    target = results["summary"][0]["target_value"]
    fig = draw_group(by_arm(results), "train_loss", target, "t")
    ax_step, ax_time = fig.axes
    for arm, trials in by_arm(results).items():
        for trial in trials:
            last = trial["history"][-1]
            step_line = lines(ax_step, f"seed:{arm}:{trial['seed']}")[f"seed:{arm}:{trial['seed']}"]
            time_line = lines(ax_time, f"seed:{arm}:{trial['seed']}")[f"seed:{arm}:{trial['seed']}"]
            assert xs(step_line)[-1] == last["step"]
            assert xs(time_line)[-1] == pytest.approx(last["train_clock_s"])
        shortest = min(t["history"][-1]["train_clock_s"] for t in trials)
        median = lines(ax_time, f"median:{arm}")[f"median:{arm}"]
        assert np.max(xs(median)) == pytest.approx(shortest)  # not past the seed that stopped first
    assert ax_time.get_xlim()[1] >= max(t["history"][-1]["train_clock_s"] for t in results["trials"])


def test_the_time_to_target_of_the_table_is_marked_on_the_target_line(results: dict) -> None:
    target = results["summary"][0]["target_value"]
    fig = draw_group(by_arm(results), "train_loss", target, "t")
    ax_step, ax_time = fig.axes
    assert ys(lines(ax_time, "target")["target"])[0] == pytest.approx(target)
    for row in results["summary"]:
        arm = row["arm"]
        marker = lines(ax_time, f"to-target:{arm}")[f"to-target:{arm}"]
        assert xs(marker)[0] == pytest.approx(row["time_to_target_s"]["median"])
        assert ys(marker)[0] == pytest.approx(target)
        steps = lines(ax_step, f"to-target:{arm}")[f"to-target:{arm}"]
        assert xs(steps)[0] == pytest.approx(row["steps_to_target"]["median"])
    # the baseline's time to target lies beyond where its median line stops: only the seeds reach it
    base = next(r for r in results["summary"] if r["arm"] == "baseline")
    assert base["time_to_target_s"]["median"] > np.max(xs(lines(ax_time, "median:baseline")["median:baseline"]))


def test_a_median_known_only_as_a_bound_is_marked_at_its_lower_end(tmp_path: Path) -> None:
    value = {"metric": "train_loss", "kind": "absolute", "value": 0.3, "slack": 0.0}
    trials = [make_trial(arm="baseline", seed=s, rate=r, n_steps=100, target=value)
              for s, r in enumerate((0.005, 0.006, 0.05))]  # two of three seeds miss
    results = make_results(trials)
    row = results["summary"][0]
    assert row["time_to_target_s"]["median"] is None and row["time_to_target_s"]["bound"] == "≥"
    fig = draw_group(by_arm(results), "train_loss", 0.3, "t")
    marker = lines(fig.axes[1], "to-target:baseline")["to-target:baseline"]
    assert marker.get_marker() == ">"
    assert xs(marker)[0] == pytest.approx(row["time_to_target_s"]["median_low"])
    path = plot_group(by_arm(results), "train_loss", 0.3, "t", tmp_path / "p.png")
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("metric,scale", [("train_loss", 1.0), ("train_loss", 1e-5), ("val_accuracy", 1.0)])
def test_fixed_margins_keep_every_label_inside_the_figure(results: dict, metric: str, scale: float) -> None:
    """The figure has fixed margins, not a layout engine (which draws it twice): every title, axis label
    and tick label must still fall inside the canvas, for small log-scale values and for accuracies."""
    arms = {arm: [{**t, "history": [{**row, metric: row["train_loss"] * scale} for row in t["history"]]}
                  for t in trials] for arm, trials in by_arm(results).items()}
    fig = draw_group(arms, metric, None, "a case with a long name · sgd · cpu")
    assert fig.get_layout_engine() is None
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    inches = fig.get_tightbbox(renderer)  # what is drawn: titles, labels, the ticks inside the view
    width, height = fig.get_size_inches()
    assert inches.x0 >= 0 and inches.y0 >= 0, (inches, metric, scale)
    assert inches.x1 <= width and inches.y1 <= height, (inches, metric, scale)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
    assert any(labels), "no tick label drawn"
