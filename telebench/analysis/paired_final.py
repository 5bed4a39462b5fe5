"""Seed-by-seed comparison of each arm's final validation metrics with the baseline's.

The summary of ``telebench run`` pairs arms with the baseline on time and steps to target; a
generalisation experiment needs the same pairing on the final validation loss and accuracy. Arms
of one seed start from the same weights and see the same batches, so the per-seed difference
(arm − baseline) isolates what the arm did. Reported: the median difference with its distribution-free
order-statistic interval and the level that interval really reaches (93.75 % with 5 seeds, a range
below 80 %), the exact two-sided sign-test p-value (both from
:func:`telebench.analysis.stats.paired_difference`), and how many seeds improved. The word is the
interval's alone: better or worse when it excludes 0, at the level printed beside it, with no
multiplicity correction (the verdicts of `telebench report` are the Holm-corrected ones; with 5 seeds
the smallest possible sign-test p is 0.0625).

    python -m telebench.analysis.paired_final reports/paper-generalization/results.json [--against ARM] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from telebench.analysis.stats import paired_difference
from telebench.analysis.summary import is_baseline, is_calibration
from telebench.results.schema import load_results
from telebench.results.store import finite

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
    direction: str | None = None  # paired_difference's verdict: "lower", "higher" or "no clear difference"
    ci_level: float | None = None  # the level the interval really reaches

    @property
    def verdict(self) -> str:
        """better / worse when the interval of the median difference excludes 0."""
        if self.direction not in ("lower", "higher"):
            return "no clear difference"
        return "better" if (self.direction == "lower") == (METRICS[self.metric] == "lower") else "worse"


def paired_differences(results: dict[str, Any], reference: str | None = None) -> list[PairedDifference]:
    """One row per (case, optimizer, arm, metric), from a results.json's trials: each arm against the
    baseline, or against the arm labelled ``reference`` (e.g. the random-teleport control)."""
    groups: dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]] = {}
    baselines: dict[tuple[str, str], str] = {}
    for trial in results.get("trials", []):
        if trial.get("status") != "ok" or is_calibration(trial):  # calibration runs set targets only
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
                rows.append(_row(key, arm, metric, [base[s].get(metric) for s in seeds],
                                 [trials[s].get(metric) for s in seeds]))
    return rows


def _row(key: tuple[str, str], arm: str, metric: str, base_values: list[Any], arm_values: list[Any]
         ) -> PairedDifference:
    """One arm against the reference on one metric, over the seeds where both have a finite value."""
    pairs = [(b, a) for b, a in zip(map(finite, base_values), map(finite, arm_values), strict=True)
             if b is not None and a is not None]
    if not pairs:
        return PairedDifference(key[0], key[1], arm, metric, 0, None, None, None, None, None, None, 0)
    base, values = [b for b, _ in pairs], [a for _, a in pairs]
    # the verdict is the interval's alone, whatever the number of seeds (see the module's docstring)
    diff = paired_difference(base, values, min_pairs=1, by_p_value=False)
    better = sum((a < b) if METRICS[metric] == "lower" else (a > b) for b, a in pairs)
    return PairedDifference(key[0], key[1], arm, metric, diff["n_pairs"], float(np.median(base)),
                            float(np.median(values)), diff["median"], diff["ci_low"], diff["ci_high"],
                            diff["p_value"], better, diff["verdict"], diff["ci_level"])


def render_markdown(rows: list[PairedDifference], reference: str = "baseline") -> str:
    """A table per metric: each arm's median final value, its median paired difference from the reference."""
    lines = []
    for metric, better in METRICS.items():
        lines += [f"**{metric}** ({better} is better; difference = arm − {reference}, per seed)", "",
                  f"| case | arm | {reference} median | arm median | median difference [CI] | CI level | sign test p | seeds better | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r.metric == metric):
            if r.median_difference is None:
                lines.append(f"| {r.case} | {r.arm} | — | — | — | — | — | 0/0 | no data |")
                continue
            p = "—" if r.p_value is None else f"{r.p_value:.2g}"
            level = "—" if r.ci_level is None else ("range" if r.ci_level < 0.8 else
                                                    f"{math.floor(r.ci_level * 10000 + 1e-6) / 100:g}%")
            lines.append(f"| {r.case} | {r.arm} | {r.baseline_median:.4f} | {r.arm_median:.4f} | "
                         f"{r.median_difference:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {level} | {p} | "
                         f"{r.better}/{r.n} | {r.verdict} |")
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
