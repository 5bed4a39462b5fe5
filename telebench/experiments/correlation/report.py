"""The study's outputs: results.json, one scatter plot per case and metric, report.md, a terminal table.

Everything here is a pure function of the records and the study (plots use matplotlib's object
API on the Agg canvas, so no display and no pyplot state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from telebench.analysis.correlation import METHODS, correlate, training_summary
from telebench.experiments.correlation.schema import Study, StudyCase
from telebench.experiments.correlation.train import NetworkRecord
from telebench.render.figures import new_figure, save_figure
from telebench.results.store import atomic_write_text

TARGETS = {"val_loss": "validation loss", "gap": "generalisation gap (val − train loss)"}


def correlations(case: StudyCase, records: Sequence[NetworkRecord]) -> list[dict[str, Any]]:
    """Every (metric, target, method) correlation of one case, over its networks that trained."""
    ok = [r for r in records if r.status == "ok"]
    rows = []
    for metric in case.metrics:
        x = [r.metrics.get(metric.label, float("nan")) for r in ok]
        for target in TARGETS:
            y = [r.val_loss if target == "val_loss" else r.gap for r in ok]
            for method in METHODS:
                rows.append({"metric": metric.label, "target": target, **correlate(x, y, method).to_dict()})
    return rows


def case_results(study: Study, records: Sequence[NetworkRecord]) -> list[dict[str, Any]]:
    """Per case: its settings, its networks in seed order, how many diverged, and the correlations."""
    cases = []
    for case in study.cases:
        mine = sorted((r for r in records if r.case == case.name), key=lambda r: r.seed)
        networks = [r.to_dict() for r in mine]
        cases.append({
            "name": case.name,
            "config": case.describe(),
            "networks": networks,
            "diverged": sum(r.status != "ok" for r in mine),
            "training": training_summary(networks, _max_epochs(case.describe())),
            "correlations": correlations(case, mine),
        })
    return cases


def _max_epochs(config: dict[str, Any]) -> float | None:
    stop = config.get("early_stopping")
    return float(stop["max_epochs"]) if isinstance(stop, dict) and "max_epochs" in stop else None


def training_of(case: dict[str, Any]) -> dict[str, Any]:
    """A case's training summary: as recorded, or, in files written before it was, from its networks."""
    found = case.get("training")
    return found if isinstance(found, dict) else training_summary(case["networks"], _max_epochs(case["config"]))


def budget_words(config: dict[str, Any]) -> str:
    """How a case's networks were trained: a fixed budget, or early stopping on a holdout of the training split."""
    stop = config.get("early_stopping")
    if not isinstance(stop, dict):
        return f"budget {config.get('budget')}"
    delta = f", improvements over {stop['min_delta']:g}" if stop.get("min_delta") else ""
    return (f"early stopping on a calibration holdout of {stop['holdout']} training samples (never the validation "
            f"split): checked every {stop['every_epochs']:g} epochs, stopped after {stop['patience']} checks without "
            f"improvement{delta} or at {stop['max_epochs']} epochs, the best weights restored and measured")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def trained_words(case: dict[str, Any]) -> str:
    """How trained a case's networks are: where early stopping stopped them, and their accuracy."""
    summary = training_of(case)
    parts = []
    stop, best = summary.get("stop_epoch", {}), summary.get("best_epoch", {})
    if stop.get("n"):
        parts.append(f"stopped at epoch {_num(stop['median'])} (median; range {_num(stop['low'])}–{_num(stop['high'])})"
                     f", best weights from epoch {_num(best.get('median'))} (median)")
        if "at_max_epochs" in summary:
            parts.append(f"{summary['at_max_epochs']} of {stop['n']} ran to max_epochs")
    val, train = summary.get("val_accuracy", {}), summary.get("train_accuracy", {})
    if val.get("n"):
        parts.append(f"median validation accuracy {_pct(val['median'])} (range {_pct(val['low'])}–{_pct(val['high'])})")
    if train.get("n"):
        parts.append(f"median training accuracy {_pct(train['median'])}")
    sizes = {n.get("train_size") for n in case["networks"]} - {None}
    if len(sizes) == 1:
        parts.append(f"trained on {sizes.pop()} training samples")
    return "; ".join(parts)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def _ci(c: dict[str, Any]) -> str:
    return f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"


def _p(p: float | None) -> str:
    return "—" if p is None else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def scatter(case: dict[str, Any], label: str, out_dir: Path) -> str:
    """metric (x) against validation loss (y), one dot per network, with the least-squares line."""
    nets = [n for n in case["networks"] if n["status"] == "ok" and label in n["metrics"]]
    x = np.array([n["metrics"][label] for n in nets], dtype=float)
    y = np.array([n["val_loss"] for n in nets], dtype=float)
    fig = new_figure(5.0, 3.8)
    ax = fig.add_subplot()
    ax.scatter(x, y, s=18, alpha=0.8, color="#1f77b4", edgecolors="none")
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.sum() >= 3 and np.ptp(x[finite]) > 0:
        slope, intercept = np.polyfit(x[finite], y[finite], 1)
        grid = np.linspace(x[finite].min(), x[finite].max(), 50)
        ax.plot(grid, slope * grid + intercept, color="#d62728", linewidth=1)
    found = {c["method"]: c for c in case["correlations"] if c["metric"] == label and c["target"] == "val_loss"}
    title = ", ".join(
        f"{m.capitalize()} r = {_fmt(found[m]['r'])} {_ci(found[m])}" for m in METHODS if m in found
    )
    what = _titles(case).get(label, label)
    ax.set_title(f"{case['name']}: {label}, {what}\n{title}", fontsize=8.5)
    ax.set_xlabel(f"{label}: {what}")
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    name = f"scatter-{case['name']}-{label}.png"
    save_figure(fig, out_dir / name)
    return name


def _name(results: dict[str, Any]) -> str:
    """The study's name: `suite` in the one results schema (telebench.results/2), `study` before it."""
    return str(results.get("suite") or results.get("study"))


def metric_title(options: dict[str, Any] | None) -> str:
    """What a metric measures, from its options in a case's `config.metrics` (older files have them too),
    so that telebench's curvature and the reference code's ψ are never mistaken for each other."""
    opts = options or {}
    kind = opts.get("metric")
    if kind == "curvature_reference":
        return "curvature (reference code's ψ)"
    if kind == "curvature":
        return f"curvature (ours: telebench's {opts.get('group', 'rescale')} orbit curvature)"
    if kind == "sharpness":
        return f"sharpness ({opts.get('directions', 'isotropic')})"
    return str(kind or "metric")


def _titles(case: dict[str, Any]) -> dict[str, str]:
    return {label: metric_title(opts) for label, opts in case["config"].get("metrics", {}).items()}


def _median_values(case: dict[str, Any]) -> list[str]:
    """The metrics' medians over the networks, and how ours compares with the reference's ψ when both are there."""
    ok = [n for n in case["networks"] if n["status"] == "ok"]
    medians = {}
    for label in case["config"].get("metrics", {}):
        values = np.array([n["metrics"].get(label, np.nan) for n in ok], dtype=float)
        if np.isfinite(values).any():
            medians[label] = float(np.nanmedian(values))
    if not medians:
        return []
    lines = ["Median over the networks: " + "; ".join(f"`{k}` {v:.4g}" for k, v in medians.items()) + "."]
    kinds = {label: opts.get("metric") for label, opts in case["config"]["metrics"].items()}
    refs = [k for k in medians if kinds[k] == "curvature_reference" and medians[k] > 0]
    ours = [k for k in medians if kinds[k] == "curvature"]
    if refs and ours:
        lines.append("Ours and the reference code's ψ are different quantities; ratio of the medians: " + "; ".join(
            f"`{o}` / `{refs[0]}` = {medians[o] / medians[refs[0]]:.3g}" for o in ours) + ".")
    return lines


def _case_section(case: dict[str, Any], plots: dict[tuple[str, str], str]) -> list[str]:
    cfg = case["config"]
    ok = [n for n in case["networks"] if n["status"] == "ok"]
    lines = [f"## {case['name']}", ""]
    lines.append(
        f"{len(case['networks'])} networks ({case['diverged']} diverged), {cfg['dataset']['name']} "
        f"{'-'.join(map(str, cfg['model']['widths']))} {cfg['model']['activation']}, "
        f"{cfg['optimizer']['name']} lr {cfg['optimizer']['lr']:g}, batch {cfg['batch_size']}, "
        f"{budget_words(cfg)}; metrics measured on {cfg['measure_batch']} training samples."
    )
    trained = trained_words(case)
    if trained:
        lines.append(f"Networks: {trained}.")
    if ok:
        val = np.array([n["val_loss"] for n in ok])
        lines.append(f"Validation loss over the networks: median {np.median(val):.4f}, "
                     f"range {val.min():.4f} to {val.max():.4f}.")
    titles = _titles(case)
    lines += ["", "| metric | what it measures | against | Pearson r [95 % CI] | p | Spearman ρ [95 % CI] | p "
              "| verdict (Spearman) |", "|---|---|---|---|---|---|---|---|"]
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for c in case["correlations"]:
        by_key.setdefault((c["metric"], c["target"]), {})[c["method"]] = c
    for (metric, target), methods in by_key.items():
        pe, sp = methods["pearson"], methods["spearman"]
        lines.append(f"| {metric} | {titles.get(metric, metric)} | {TARGETS[target]} | {_fmt(pe['r'])} {_ci(pe)} | "
                     f"{_p(pe['p_value'])} | {_fmt(sp['r'])} {_ci(sp)} | {_p(sp['p_value'])} | {sp['verdict']} |")
    lines += ["", *_median_values(case), ""]
    lines.append("Metric options: " + "; ".join(
        f"`{label}`: " + ", ".join(f"{k}={v}" for k, v in opts.items()) for label, opts in cfg["metrics"].items()
    ) + ".")
    lines.append("")
    for label in cfg["metrics"]:
        if (case["name"], label) in plots:
            lines.append(f"![{case['name']} {label}]({plots[(case['name'], label)]})")
    lines.append("")
    return lines


def render_markdown(results: dict[str, Any], plots: dict[tuple[str, str], str]) -> str:
    env = results["environment"]
    source = results.get("suite_path") or results.get("source")
    lines = [
        f"# Correlation study: {_name(results)}",
        "",
        results.get("description") or "",
        "",
        f"Created {results['created']} from `{source}` with telebench {env.get('telebench')}, "
        f"torch {env.get('torch')}, on {env.get('cpu_model')}."
        + (" **Partial: not every network finished (interrupted, or a network failed); rerun into the same "
           "folder to finish.**" if results.get("partial") else ""),
        "",
        "Each network is trained from its own seed (initial weights and batch order), then measured once: the "
        "metrics on a fixed subset of the training split, the losses on the whole validation split and on up to "
        "10k training samples. r is Pearson's or Spearman's correlation over the networks; the interval is a "
        "95 % paired-bootstrap percentile interval (4000 resamples of the networks); p tests r = 0. A verdict "
        "is *positive* or *negative* only when the interval excludes 0.",
        "",
        "\"curvature (ours)\" is telebench's curvature of the orbit exp(tM)·w under the named group; \"curvature "
        "(reference code's ψ)\" is the quantity the paper's correlation.py computed (another action, other "
        "directions, no cross terms; `telebench.symmetry.objectives.curvature_reference`). They are different "
        "numbers, correlated separately.",
        "",
    ]
    for case in results["cases"]:
        lines += _case_section(case, plots)
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    plots = {(case["name"], label): scatter(case, label, out_dir)
             for case in results["cases"] for label in case["config"]["metrics"]}
    path = out_dir / "report.md"
    atomic_write_text(path, render_markdown(results, plots))
    return path


def render_terminal(results: dict[str, Any], console: Console) -> None:
    table = Table(title=f"correlation with validation loss: {_name(results)}")
    for column in ("case", "metric", "what it measures", "Pearson r [95% CI]", "Spearman ρ [95% CI]", "verdict"):
        table.add_column(column)
    for case in results["cases"]:
        titles = _titles(case)
        for c in case["correlations"]:
            if c["target"] != "val_loss" or c["method"] != "spearman":
                continue
            pearson = next(p for p in case["correlations"]
                           if p["metric"] == c["metric"] and p["target"] == "val_loss" and p["method"] == "pearson")
            table.add_row(case["name"], c["metric"], titles.get(c["metric"], c["metric"]), f"{_fmt(pearson['r'])} {_ci(pearson)}",
                          f"{_fmt(c['r'])} {_ci(c)}", c["verdict"])
    console.print(table)
    for case in results["cases"]:
        trained = trained_words(case)
        if trained:
            console.print(f"{case['name']}: {trained}", highlight=False, markup=False)

