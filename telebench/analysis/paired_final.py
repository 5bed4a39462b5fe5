"""Seed-by-seed comparison of each arm's final validation metrics with the baseline's.

The summary of ``telebench run`` pairs arms with the baseline on time and steps to target; a
generalisation experiment needs the same pairing on the final validation loss and accuracy. Arms
of one seed start from the same weights and see the same batches, so the per-seed difference
(arm − baseline) isolates what the arm did. Reported: the median difference with a percentile
bootstrap 95 % interval (:func:`telebench.analysis.stats.bootstrap_ci`), a two-sided Wilcoxon signed-rank
p-value, and how many seeds improved. With 5 seeds the smallest possible p is 0.0625, so the
interval carries the verdict.

    python -m telebench.analysis.paired_final reports/paper-generalization/results.json [--against ARM] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from telebench.analysis.stats import bootstrap_ci
from telebench.analysis.summary import is_baseline
from telebench.results.schema import load_results

METRICS = {"final_val_loss": "lower", "final_val_accuracy": "higher"}


@dataclass(frozen=True)
class PairedDifference:
    """Arm against a reference arm (the baseline unless chosen), over the seeds both finished."""

    case: str
    optimizer: str
    arm: str
    metric: str
    n: int
    baseline_median: float | None
    arm_median: float | None
    median_difference: float | None  # arm − baseline
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    better: int  # seeds on which the arm beat the baseline

    @property
    def verdict(self) -> str:
        """better / worse when the 95 % interval of the median difference excludes 0."""
        if self.ci_low is None or self.ci_high is None:
            return "no clear difference"
        lower_is_better = METRICS[self.metric] == "lower"
        if self.ci_high < 0:
            return "better" if lower_is_better else "worse"
        if self.ci_low > 0:
            return "worse" if lower_is_better else "better"
        return "no clear difference"


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _wilcoxon(differences: list[float]) -> float | None:
    nonzero = [d for d in differences if d != 0]
    if len(nonzero) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(sps.wilcoxon(nonzero, alternative="two-sided").pvalue)
    return None if math.isnan(p) else p


def paired_differences(results: dict[str, Any], reference: str | None = None) -> list[PairedDifference]:
    """One row per (case, optimizer, arm, metric), from a results.json's trials: each arm against the
    baseline, or against the arm labelled ``reference`` (e.g. the random-teleport control)."""
    groups: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
    baselines: dict[tuple[str, str], str] = {}
    for trial in results.get("trials", []):
        if trial.get("status") != "ok":
            continue
        key = (str(trial["case"]), str(trial["optimizer"]))
        groups.setdefault(key, {}).setdefault(str(trial["arm"]), {})[int(trial["seed"])] = trial
        if is_baseline(trial):
            baselines[key] = str(trial["arm"])
    rows = []
    for key, arms in groups.items():
        base_label = reference if reference is not None else baselines.get(key)
        if base_label is None or base_label not in arms:
            continue
        base = arms[base_label]
        for arm, trials in arms.items():
            if arm == base_label:
                continue
            seeds = sorted(set(base) & set(trials))
            for metric in METRICS:
                pairs = [(_finite(base[s].get(metric)), _finite(trials[s].get(metric))) for s in seeds]
                pairs = [(b, a) for b, a in pairs if b is not None and a is not None]
                rows.append(_row(key, arm, metric, pairs))
    return rows


def _row(key: tuple[str, str], arm: str, metric: str, pairs: list[tuple[float, float]]) -> PairedDifference:
    if not pairs:
        return PairedDifference(key[0], key[1], arm, metric, 0, None, None, None, None, None, None, 0)
    base, values = np.array([b for b, _ in pairs]), np.array([a for _, a in pairs])
    diffs = list(values - base)
    low, high = bootstrap_ci(diffs)
    better = int(sum((d < 0) if METRICS[metric] == "lower" else (d > 0) for d in diffs))
    return PairedDifference(key[0], key[1], arm, metric, len(pairs), float(np.median(base)), float(np.median(values)),
                            float(np.median(diffs)), low, high, _wilcoxon(diffs), better)


def render_markdown(rows: list[PairedDifference], reference: str = "baseline") -> str:
    """A table per metric: each arm's median final value, its median paired difference from the reference."""
    lines = []
    for metric, better in METRICS.items():
        lines += [f"**{metric}** ({better} is better; difference = arm − {reference}, per seed)", "",
                  f"| case | arm | {reference} median | arm median | median difference [95 % CI] | Wilcoxon p | seeds better | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r.metric == metric):
            if r.median_difference is None:
                lines.append(f"| {r.case} | {r.arm} | — | — | — | — | 0/0 | no data |")
                continue
            p = "—" if r.p_value is None else f"{r.p_value:.2g}"
            lines.append(f"| {r.case} | {r.arm} | {r.baseline_median:.4f} | {r.arm_median:.4f} | "
                         f"{r.median_difference:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {p} | {r.better}/{r.n} | "
                         f"{r.verdict} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results.json written by `telebench run`")
    parser.add_argument("--against", help="compare with this arm label instead of the baseline (e.g. random)")
    parser.add_argument("--out", type=Path, help="write the markdown tables here instead of printing them")
    args = parser.parse_args(argv)
    rows = paired_differences(load_results(args.results), reference=args.against)
    text = render_markdown(rows, reference=args.against or "baseline")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
