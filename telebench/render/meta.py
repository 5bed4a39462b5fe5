"""report.md and PNG plots for a meta suite, from its results.json alone.

Per case: loss against step and against training-clock seconds (median over the unseen test seeds,
min–max band), the meta-training curve, and every teleport's relative loss change per step
(median and max over seeds, on the batch and held out) against the group's tolerance. A diverged
run counts as an infinite loss from the step it diverged, never as a dropped seed. The findings
at the end of each case are sentences computed from the numbers, the same for any outcome.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from telebench.analysis.meta_verdicts import last_loss, verdicts
from telebench.render.figures import new_figure, save_figure
from telebench.results.store import atomic_write_text

SCHEMA = "telebench.meta/1"
EARLY_STEP = 30  # the paper plots the first 30 steps
FLOOR = 1e-18  # exact zeros drawn here on log axes
DESIGN_NOTES = {
    "full": "the paper's design: one LSTM reads the whole gradient vector and writes the whole update",
    "coordinatewise": "one small LSTM shared by every weight, run as a batch over the coordinates, the standard "
                      "learned-optimizer design; the paper's is one LSTM over the whole gradient vector",
}
# Meta-training in the reference code (paper-facts §5): trajectories × steps per trajectory.
PAPER_SCALE = {"LSTM(update)": (600, 100), "LSTM(update, tele)": (700, 100), "LSTM(lr, tele)": (30, 300)}


def arm_label(arm: dict[str, Any]) -> str:
    """The paper's names for the arms."""
    update, teleport = arm["update"], arm["teleport"]
    if update == "gd":
        return f"GD (lr {arm['lr']:g})" + (" + LSTM(tele)" if teleport else "")
    if update == "learned_lr":
        return "LSTM(lr, tele)"
    return "LSTM(update, tele)" if teleport else "LSTM(update)"


def _loss(values: Sequence[float | None]) -> np.ndarray:
    """Losses as floats; null (written for inf/nan) is a diverged step, i.e. inf."""
    return np.array([math.inf if v is None or not math.isfinite(v) else v for v in values], dtype=float)


def step_band(runs: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, median, min, max) of the loss; a run that stopped early stays at inf."""
    n = max(len(r["loss"]) for r in runs)
    ys = np.full((len(runs), n), math.inf)
    for i, r in enumerate(runs):
        ys[i, : len(r["loss"])] = _loss(r["loss"])
    return np.arange(n), np.median(ys, axis=0), ys.min(axis=0), ys.max(axis=0)


def time_band(runs: Sequence[dict[str, Any]], points: int = 200) -> tuple[np.ndarray, ...] | None:
    """(seconds, median, min, max) on a grid up to the earliest end among runs that finished;
    each run's loss at time τ is the last one it had reached by τ."""
    finished = [r for r in runs if math.isfinite(_loss(r["loss"])[-1])]
    if not finished:
        return None
    end = min(r["seconds"][-1] for r in finished)
    if end <= 0:
        return None
    grid = np.linspace(0.0, end, points)
    ys = np.empty((len(runs), points))
    for i, r in enumerate(runs):
        seconds, loss = np.asarray(r["seconds"], dtype=float), _loss(r["loss"])
        index = np.searchsorted(seconds, grid, side="right") - 1
        ys[i] = np.where(index < len(loss) - 1, loss[np.clip(index, 0, len(loss) - 1)], loss[-1])
        if not math.isfinite(loss[-1]):  # diverged: inf from the step it diverged
            ys[i, grid >= seconds[len(loss) - 1]] = math.inf
    return grid, np.median(ys, axis=0), ys.min(axis=0), ys.max(axis=0)


def final(runs: Sequence[dict[str, Any]]) -> np.ndarray:
    """Each run's last loss (inf if it diverged)."""
    return np.array([last_loss(r) for r in runs])


def at_step(runs: Sequence[dict[str, Any]], step: int) -> np.ndarray:
    return np.array([(_loss(r["loss"]).tolist() + [math.inf] * (step + 1))[step] for r in runs])


def per_step_seconds(runs: Sequence[dict[str, Any]]) -> float:
    """Median over runs of training-clock seconds per step."""
    return float(np.median([r["seconds"][-1] / max(1, len(r["seconds"]) - 1) for r in runs]))


def change_summary(values: Sequence[float | None], tolerance: float) -> dict[str, Any]:
    """Count, max and median of teleports' relative loss changes (finite ones), and how many were not
    finite or beyond ``tolerance``."""
    a = np.array([math.nan if v is None else v for v in values], dtype=float)
    ok = a[np.isfinite(a)]
    return {"count": int(a.size), "max": float(ok.max()) if ok.size else None,
            "median": float(np.median(ok)) if ok.size else None,
            "over_tolerance": int((ok > tolerance).sum()), "not_finite": int(a.size - ok.size)}


def pooled(runs: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    """One list of every run's values under ``key`` (teleport changes of all seeds)."""
    return [v for r in runs for v in r[key]]


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "∞ (diverged)"
    if math.isnan(x):
        return "—"
    return f"{x:.3g}"


def _range(values: np.ndarray) -> str:
    return f"{_fmt(float(np.median(values)))} [{_fmt(float(values.min()))}–{_fmt(float(values.max()))}]"


# ---- plots ---------------------------------------------------------------------------------------------


def _figure(n: int, width: float = 5.5) -> tuple[Figure, Any]:
    fig = new_figure(width * n, 4.2, layout="constrained")
    return fig, fig.subplots(1, n, squeeze=False)[0]


def _finite_or_nan(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, np.nan)


def plot_loss(case: dict[str, Any], path: Path) -> Path:
    """Loss against step and against training-clock seconds, one line per arm."""
    fig, (ax_step, ax_time) = _figure(2)
    for i, arm in enumerate(case["arms"]):
        color, label = f"C{i}", f"{arm_label(arm)} (n={len(arm['test'])})"
        x, med, low, high = step_band(arm["test"])
        ax_step.plot(x, _finite_or_nan(med), color=color, lw=1.8, label=label)
        ax_step.fill_between(x, _finite_or_nan(low), _finite_or_nan(high), color=color, alpha=0.18, lw=0)
        band = time_band(arm["test"])
        if band is not None:
            t, med, low, high = band
            ax_time.plot(t, _finite_or_nan(med), color=color, lw=1.8, label=label)
            ax_time.fill_between(t, _finite_or_nan(low), _finite_or_nan(high), color=color, alpha=0.18, lw=0)
    top, bottom = _limits(case)
    for ax, xlabel in ((ax_step, "step"), (ax_time, "training clock (s)")):
        ax.set_yscale("log")
        ax.set_ylim(bottom, top)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss ½‖Y − f(X)‖²")
        ax.grid(alpha=0.3)
    ax_step.legend(fontsize=8)
    fig.suptitle(f"{case['name']}: median over unseen seeds, band min–max (cut at 10× the initial loss; "
                 "gaps: diverged)")
    save_figure(fig, path)
    return path


def _limits(case: dict[str, Any]) -> tuple[float, float]:
    """Log-axis limits: up to 10× the largest initial loss (a diverging band would otherwise flatten
    every curve), down to half the smallest finite loss."""
    losses = [_loss(r["loss"]) for a in case["arms"] for r in a["test"]]
    first = max(float(v[0]) for v in losses if math.isfinite(v[0]))
    low = min(float(v[np.isfinite(v) & (v > 0)].min()) for v in losses if (np.isfinite(v) & (v > 0)).any())
    return 10 * first, low / 2


def plot_meta_training(case: dict[str, Any], path: Path) -> Path:
    """Final loss of each meta-training trajectory, with a running median over 10."""
    fig, (ax,) = _figure(1, 7)
    for i, arm in enumerate(case["arms"]):
        losses = _loss(arm["meta_train"]["trajectory_loss"])
        if losses.size == 0:
            continue
        x = np.arange(1, losses.size + 1)
        ax.plot(x, _finite_or_nan(losses), color=f"C{i}", lw=0.6, alpha=0.35)
        window = [np.median(losses[max(0, j - 9): j + 1]) for j in range(losses.size)]
        ax.plot(x, _finite_or_nan(np.array(window)), color=f"C{i}", lw=1.8, label=arm_label(arm))
    ax.set_yscale("log")
    ax.set_xlabel("meta-training trajectory")
    ax.set_ylabel("loss at the trajectory's last step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"{case['name']}: meta-training (thin: each trajectory, thick: running median of 10)")
    save_figure(fig, path)
    return path


def plot_teleport_change(case: dict[str, Any], path: Path) -> Path | None:
    """|ΔL|/L of the teleport at each step: max and median over seeds, on the batch and held out."""
    arms = [a for a in case["arms"] if any(r["teleport_batch"] for r in a["test"])]
    if not arms:
        return None
    fig, axes = _figure(2)
    for ax, key, title in ((axes[0], "teleport_batch", "on the teleport batch"),
                           (axes[1], "teleport_heldout", "on held-out samples")):
        for i, arm in enumerate(case["arms"]):
            if arm not in arms:
                continue
            n = max(len(r[key]) for r in arm["test"])
            ys = np.full((len(arm["test"]), n), np.nan)
            for j, r in enumerate(arm["test"]):
                ys[j, : len(r[key])] = [np.nan if v is None else v for v in r[key]]
            with np.errstate(all="ignore"):
                high, med = np.nanmax(ys, axis=0), np.nanmedian(ys, axis=0)
            x = np.arange(n)
            ax.plot(x, np.maximum(high, FLOOR), color=f"C{i}", lw=1.2, label=f"{arm_label(arm)} max")
            ax.plot(x, np.maximum(med, FLOOR), color=f"C{i}", lw=1.2, ls="--", label=f"{arm_label(arm)} median")
        if key == "teleport_batch":
            ax.axhline(case["group"]["tolerance"], color="black", ls=":", lw=1, label="group tolerance")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("|L(g·w) − L(w)| / L(w)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{case['name']}: loss change of every applied teleport (zeros drawn at {FLOOR:g})")
    save_figure(fig, path)
    return path


# ---- markdown ------------------------------------------------------------------------------------------


def _setup(case: dict[str, Any]) -> list[str]:
    c = case["config"]
    task, train, tp, lstm = c["task"], c["meta_train"], c["teleport"], c["lstm"]
    widths = task["widths"]
    shapes = " and ".join(f"{o}×{i}" for i, o in zip(widths[:-1], widths[1:], strict=True))
    act = "LeakyReLU(" + f"{task['negative_slope']:g})" if task["activation"] == "leaky_relu" else task["activation"]
    group = case["group"]
    return [
        f"- **Task**: ½‖Y − f(X)‖² for an MLP with weights {shapes}, no biases, {act}; X is {widths[0]}×"
        f"{task['samples']}, X, Y and (init `{task['init']}`) the weights drawn per seed; {task['dtype']}.",
        f"- **Teleport**: group `{group['name']}` ({'exact on all inputs' if group['exact'] else 'exact on the batch'}), "
        f"g = {'exp(T)' if tp['parametrization'] == 'exp' else 'I + T'} with the exact inverse, ‖T‖_F = "
        f"{tp['magnitude']:g} at every step; relative loss-change tolerance {group['tolerance']:g}.",
        f"- **LSTMs**: update LSTM `{lstm['update_design']}` ({DESIGN_NOTES[lstm['update_design']]}; hidden "
        f"{lstm['update_hidden']}, output × {lstm['update_scale']:g}), teleport LSTM hidden {lstm['teleport_hidden']} "
        f"(one element per hidden layer from all gradients), gradients preprocessed `{lstm['preprocess']}`; "
        f"learned step size in [{lstm['step_size_range'][0]:g}, {lstm['step_size_range'][1]:g}].",
        f"- **Meta-training**: {train['trajectories']} trajectories × {train['steps']} steps (seeds {train['seed']}–"
        f"{train['seed'] + train['trajectories'] - 1}), truncated back-propagation every {train['unroll']} steps, "
        f"Adam lr {train['lr_update']:g} (update LSTM) / {train['lr_teleport']:g} (teleport LSTM), meta-loss "
        f"`{train['loss']}` of the window's losses.",
        f"- **Test**: {len(c['test']['seeds'])} unseen seeds ({', '.join(map(str, c['test']['seeds']))}) × "
        f"{c['test']['steps']} steps; arms interleaved seed by seed after a warm-up.",
    ]


def _scale_note(case: dict[str, Any]) -> str:
    """How the learned arms' meta-training compares with the reference code's (trajectories × steps)."""
    train = case["config"]["meta_train"]
    used = train["trajectories"] * train["steps"]
    paper = {arm_label(a): PAPER_SCALE[arm_label(a)] for a in case["arms"] if arm_label(a) in PAPER_SCALE}
    if not paper:
        return ""
    parts = "; ".join(f"{label} {n}×{s}" for label, (n, s) in paper.items())
    shrunk = [label for label, (n, s) in paper.items() if used < n * s]
    if not shrunk:
        return f"Meta-training ({train['trajectories']}×{train['steps']}) matches or exceeds the paper's ({parts})."
    return (f"**Shrunk**: every learned arm meta-trains on {train['trajectories']} trajectories × {train['steps']} "
            f"steps; the paper used {parts}. {', '.join(shrunk)} therefore saw less meta-training than in the paper.")


def _arm_table(case: dict[str, Any]) -> list[str]:
    rows = ["| arm | meta-parameters | meta-training (s) | test clock per step (ms) | loss at step "
            f"{EARLY_STEP} | final loss, median [min–max] | untrained final loss | diverged |",
            "|---|---:|---:|---:|---|---|---|---:|"]
    for arm in case["arms"]:
        runs = arm["test"]
        untrained = _range(final(arm["untrained"])) if arm["untrained"] else "—"
        trained = arm["meta_train"]["seconds"] if arm["meta_parameters"] else 0.0
        rows.append(f"| {arm_label(arm)} | {arm['meta_parameters']:,} | {trained:.1f} | "
                    f"{1e3 * per_step_seconds(runs):.2f} | {_range(at_step(runs, EARLY_STEP))} | "
                    f"{_range(final(runs))} | {untrained} | {sum(not math.isfinite(v) for v in final(runs))}"
                    f"/{len(runs)} |")
    return rows


def _teleport_table(case: dict[str, Any]) -> list[str]:
    tol = case["group"]["tolerance"]
    rows = ["| arm | phase | teleports | batch max | batch median | held-out max | held-out median | "
            f"batch over tolerance {tol:g} | not finite |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm in case["arms"]:
        if not arm["teleport"]:
            continue
        test = {key: change_summary(pooled(arm["test"], f"teleport_{key}"), tol) for key in ("batch", "heldout")}
        for phase, summary in (("meta-training", arm["meta_train"]["teleport"]), ("test", test)):
            b, h = summary["batch"], summary["heldout"]
            cells = [_fmt_change(v) for v in (b["max"], b["median"], h["max"], h["median"])]
            rows.append(f"| {arm_label(arm)} | {phase} | {b['count']} | {' | '.join(cells)} | "
                        f"{b['over_tolerance']} | {b['not_finite']} |")
    return rows


def _fmt_change(v: float | None) -> str:
    return "—" if v is None else f"{v:.2g}"


def findings(case: dict[str, Any]) -> list[str]:
    """Plain sentences from the numbers: trained vs untrained, teleport vs none, vs GD, invariance."""
    out: list[str] = []
    by_label = {arm_label(a): a for a in case["arms"]}

    def med(arm: dict[str, Any], runs_key: str = "test") -> float:
        return float(np.median(final(arm[runs_key])))

    def ratio(a: float, b: float) -> str:
        if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
            return "not comparable (a median diverged)"
        return f"{a / b:.2f}× the latter"

    for label, arm in by_label.items():
        if arm["untrained"]:
            a, b = med(arm), med(arm, "untrained")
            verdict = "lower than" if a < b else "not lower than"
            out.append(f"{label}: median final loss {_fmt(a)} after meta-training, {verdict} its untrained "
                       f"initialisation's {_fmt(b)}.{_still_falling(arm)}")
        sizes = [v for r in arm["test"] for v in r["step_size"] if v is not None and math.isfinite(v)]
        if sizes:
            out.append(f"{label}: learned step sizes at test from {min(sizes):.2g} to {max(sizes):.2g} "
                       f"(median {float(np.median(sizes)):.2g}).")
    for base, tele in (("LSTM(update)", "LSTM(update, tele)"),):
        if base in by_label and tele in by_label:
            a, b = med(by_label[tele]), med(by_label[base])
            ta, tb = per_step_seconds(by_label[tele]["test"]), per_step_seconds(by_label[base]["test"])
            out.append(f"Adding the learned teleport to the learned update: median final loss {_fmt(a)} with "
                       f"teleport vs {_fmt(b)} without ({ratio(a, b)}), at {ta / tb:.2f}× the clock time per step.")
    gd = next((a for label, a in by_label.items() if label.startswith("GD") and not a["teleport"]), None)
    if gd is not None:
        g = med(gd)
        for label, arm in by_label.items():
            if arm is not gd:
                out.append(f"{label} vs {arm_label(gd)}: median final loss {_fmt(med(arm))} vs {_fmt(g)} "
                           f"({ratio(med(arm), g)}).")
    tol = case["group"]["tolerance"]
    for label, arm in by_label.items():
        if not arm["teleport"]:
            continue
        test = change_summary(pooled(arm["test"], "teleport_batch"), tol)
        train = arm["meta_train"]["teleport"]["batch"]
        held = change_summary(pooled(arm["test"], "teleport_heldout"), tol)
        worst = max((v for v in (test["max"], train["max"]) if v is not None), default=None)
        out.append(f"{label}: {test['count'] + train['count']} teleports (meta-training and test), "
                   f"{test['over_tolerance'] + train['over_tolerance']} beyond the tolerance {tol:g} and "
                   f"{test['not_finite'] + train['not_finite']} with a non-finite loss; largest relative change "
                   f"of the batch loss {_fmt_change(worst)}. On held-out samples the test teleports changed the "
                   f"loss by {_fmt_change(held['median'])} (median) and up to {_fmt_change(held['max'])}.")
    return out


def _still_falling(arm: dict[str, Any], window: int = 10) -> str:
    """A note when the last trajectories' median loss is still clearly below the window before."""
    losses = _loss(arm["meta_train"]["trajectory_loss"])
    if losses.size < 2 * window:
        return ""
    last, before = float(np.median(losses[-window:])), float(np.median(losses[-2 * window: -window]))
    if last < 0.9 * before:
        return (f" Its meta-training curve was still falling (median {_fmt(last)} over the last {window} "
                f"trajectories, {_fmt(before)} over the {window} before), so it is under-trained.")
    return ""


def verdict_section(cases: Sequence[dict[str, Any]]) -> list[str]:
    """The paired verdicts of :mod:`telebench.analysis.meta_verdicts` as a markdown section."""
    rows = verdicts(cases, arm_label)
    if not rows:
        return []
    m = rows[0]["holm_m"]
    out = ["## Verdicts", "",
           "Each learned-teleport arm against its reference without a teleport (LSTM(update, tele) against "
           "LSTM(update), LSTM(lr, tele) against GD), on the test seeds' final loss, paired by seed (the same task "
           f"and weights): exact two-sided sign test, Holm over these {m} comparison(s), "
           "α = 0.05; the word is said of the arm's final loss (a diverged run is worse than any finite loss). "
           "*ratio*: the median over seeds of arm ÷ reference.", "",
           "| case | arm | against | seeds | arm lower / higher | median ratio | p (raw → Holm) | verdict |",
           "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = "—" if r["median_ratio"] is None else f"{r['median_ratio']:.3g}×"
        p = "—" if r["p_value"] is None else f"{r['p_value']:.2g} → {r['p_adjusted']:.2g}"
        out.append(f"| {r['case']} | {r['arm']} | {r['against']} | {r['n_pairs']} | {r['lower']} / {r['higher']} | "
                   f"{ratio} | {p} | {r['verdict']} |")
    return out


def render_markdown(results: dict[str, Any], images: dict[str, dict[str, str]]) -> str:
    env = results["environment"]
    lines = [
        f"# Meta suite `{results['suite']}`: learning where to teleport",
        "",
        results.get("description", "").strip(),
        "",
        f"Generated by `telebench run {results['suite_path']}` ({results.get('created') or results.get('finished')}) "
        f"on {env.get('cpu_model')}, "
        f"torch {env.get('torch')}, {env.get('threads')} thread(s), commit {env.get('git_commit') or 'unknown'}. "
        f"Whole run: {results['wall_seconds']:.0f} s of wall time.",
        "",
        "Meta-training time is reported apart from test time. The test clock covers the gradient, the LSTMs, "
        "the update and the teleport; measuring each teleport's loss change runs off the clock.",
    ]
    lines += ["", *verdict_section(results["cases"])]
    for case in results["cases"]:
        pics = images.get(case["name"], {})
        lines += ["", f"## Case `{case['name']}`", "", *_setup(case)]
        note = _scale_note(case)
        if note:
            lines += ["", note]
        lines += ["", f"Test wall time, all arms: {case['test_wall_seconds']:.1f} s.", "", *_arm_table(case), ""]
        for key, alt in (("loss", "loss vs step and vs clock"), ("meta", "meta-training curves"),
                         ("teleport", "teleport loss change per step")):
            if key in pics:
                lines += [f"![{alt}]({pics[key]})", ""]
        if any(a["teleport"] for a in case["arms"]):
            lines += ["### Teleport invariance", "", *_teleport_table(case), ""]
        lines += ["### Findings", "", *[f"- {s}" for s in findings(case)]]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict[str, Any], out_dir: Path, plots: bool = True) -> Path:
    """Write report.md (and the PNGs it links) into ``out_dir``; returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, dict[str, str]] = {}
    if plots:
        for case in results["cases"]:
            name = case["name"]
            pics = {"loss": plot_loss(case, out_dir / f"{name}-loss.png").name,
                    "meta": plot_meta_training(case, out_dir / f"{name}-meta-training.png").name}
            tele = plot_teleport_change(case, out_dir / f"{name}-teleport-change.png")
            if tele is not None:
                pics["teleport"] = tele.name
            images[name] = pics
    path = out_dir / "report.md"
    atomic_write_text(path, render_markdown(results, images))
    return path
