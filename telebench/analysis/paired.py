"""One arm against the baseline, seed by seed, on every metric: the blocks of a summary row.

Metrics (the names a report may choose as its primary metric):

- `time_to_target`, `steps_to_target`: costs, compared as speedups base/arm; a miss is right-censored
  at what the trial spent (its training clock, its steps), see `telebench.analysis.censored`.
- `final_train_loss`, `final_val_loss`: the loss at the end of the budget, never censored; compared as
  the difference arm − baseline, absolute and relative to the baseline's value. A diverged trial is
  worse than any finite loss (its sign is known, its size not).
- `auc_log_train_loss`: the area under the log training-loss curve over the evaluated steps
  (trapezoids, divided by the steps spanned: the mean log loss along the run, so lower means the
  loss fell sooner). Compared as arm − baseline; `relative` is exp(Δ) − 1, the change in the
  geometric-mean loss.

Every block is JSON-safe (±∞ as "inf"/"-inf", NaN as null), and its median is a number only where it
is known; where only a bound is known it is null and `bound` says which ("≥", "≤", "between").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from telebench.analysis.censored import (
    CONFIDENCE,
    RANGE_BELOW,
    PairedArrays,
    analyse,
    bound_kind,
    censored_log_ratios,
    spread,
    worse_is_censored,
)
from telebench.analysis.stats import json_number
from telebench.results.store import finite

Trial = dict[str, Any]
Pair = tuple[Trial, Trial]  # (baseline, arm) of one seed

COSTS = {"time_to_target": ("time_to_target_s", "train_clock_s", "train_clock_s"),
         "steps_to_target": ("steps_to_target", "steps", "step")}  # field, spent, history field
LOSSES = ("final_train_loss", "final_val_loss")
AUC = "auc_log_train_loss"
PRIMARY_METRICS = (*COSTS, *LOSSES, AUC)
BLOCKS = {  # summary-row block of each metric
    "time_to_target": "speedup_time",
    "steps_to_target": "speedup_steps",
    "final_train_loss": "train_loss_change",
    "final_val_loss": "val_loss_change",
    "auc_log_train_loss": "auc_change",
}


@dataclass(frozen=True)
class MetricComparison:
    """The analysis of one metric for one arm: the JSON block plus what Holm and the advice need."""

    metric: str
    block: dict[str, Any]
    result: PairedArrays  # one row (D = 1)
    log_effects: np.ndarray  # exact per-seed effects on a log scale, for the seeds advice

    @property
    def p_value(self) -> float | None:
        p = float(self.result.p_value[0])
        return None if math.isnan(p) else p

    @property
    def informative(self) -> int:
        return int(self.result.positives[0] + self.result.negatives[0])


def auc_log_loss(trial: Trial, metric: str = "train_loss") -> float | None:
    """Mean of log(metric) over the evaluated steps (trapezoids); None without a finite positive curve."""
    rows = [(finite(r.get("step")), finite(r.get(metric))) for r in trial.get("history") or []]
    points = [(s, v) for s, v in rows if s is not None and v is not None and v > 0]
    if not points:
        return None
    steps = np.array([s for s, _ in points], dtype=float)
    logs = np.log(np.array([v for _, v in points], dtype=float))
    if points[-1][0] == points[0][0]:
        return float(logs.mean())
    area = float(np.sum(0.5 * (logs[1:] + logs[:-1]) * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


def final_loss(trial: Trial, metric: str) -> float | None:
    """The trial's final `metric` (e.g. final_val_loss), else the last finite value in its history."""
    value = finite(trial.get(metric))
    if value is not None:
        return value
    for row in reversed(trial.get("history") or []):
        value = finite(row.get(metric.removeprefix("final_")))
        if value is not None:
            return value
    return None


def compare(pairs: Sequence[Pair], metric: str, confidence: float = CONFIDENCE) -> MetricComparison:
    """The block of one metric over the paired seeds."""
    if metric in COSTS:
        return _cost(pairs, metric, confidence)
    if metric in LOSSES:
        return _loss(pairs, metric, confidence)
    if metric == AUC:
        return _auc(pairs, confidence)
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(PRIMARY_METRICS)}")


def _cost(pairs: Sequence[Pair], metric: str, confidence: float) -> MetricComparison:
    field, spent, history_field = COSTS[metric]

    def cost(t: Trial) -> float:
        v = finite(t.get(field))
        return math.nan if v is None else v

    def budget(t: Trial) -> float:
        v = finite(t.get(spent))
        if v is None:
            last = (t.get("history") or [{}])[-1]
            v = finite(last.get(history_field))
        return 0.0 if v is None else v

    b, a = np.array([cost(x) for x, _ in pairs]), np.array([cost(y) for _, y in pairs])
    cb, ca = np.array([budget(x) for x, _ in pairs]), np.array([budget(y) for _, y in pairs])
    lo, hi, sign, valid = censored_log_ratios(b, cb, a, ca)
    result = analyse(lo, hi, sign, valid, confidence)
    block = _display(result, metric, "ratio")
    exact = (~np.isnan(b)) & (~np.isnan(a))
    block.update(both_missed=int((np.isnan(b) & np.isnan(a)).sum()), censored=int((valid & ~exact).sum()))
    return MetricComparison(metric, block, result, np.where(exact, lo, np.nan))


def _failed(t: Trial) -> bool:
    return t.get("status") == "diverged"


def _loss(pairs: Sequence[Pair], metric: str, confidence: float) -> MetricComparison:
    def value(t: Trial) -> float:
        v = None if _failed(t) or t.get("status") != "ok" else final_loss(t, metric)
        return math.nan if v is None else v

    b, a = np.array([value(x) for x, _ in pairs]), np.array([value(y) for _, y in pairs])
    bf, af = np.array([_failed(x) for x, _ in pairs], bool), np.array([_failed(y) for _, y in pairs], bool)
    return _difference(metric, b, bf, a, af, confidence, relative="ratio")


def _auc(pairs: Sequence[Pair], confidence: float) -> MetricComparison:
    def value(t: Trial) -> float:
        v = None if _failed(t) or t.get("status") != "ok" else auc_log_loss(t)
        return math.nan if v is None else v

    b, a = np.array([value(x) for x, _ in pairs]), np.array([value(y) for _, y in pairs])
    bf, af = np.array([_failed(x) for x, _ in pairs], bool), np.array([_failed(y) for _, y in pairs], bool)
    return _difference(AUC, b, bf, a, af, confidence, relative="exp")


def _difference(metric: str, b: np.ndarray, bf: np.ndarray, a: np.ndarray, af: np.ndarray,
                confidence: float, relative: str) -> MetricComparison:
    """arm − baseline (y = base − arm inside), with its relative form beside it."""
    lo, hi, sign, valid = worse_is_censored(b, bf, a, af)
    result = analyse(lo, hi, sign, valid, confidence)
    block = _display(result, metric, "difference")
    if relative == "ratio":  # (arm − base) / base per seed: y' = 1 − arm/base
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_arm = np.where(bf, 1.0, a / np.where(b > 0, b, np.nan))  # a diverged side's value is unused
        rel_base = np.where(np.isnan(b) & ~bf, np.nan, 1.0)
        rel = analyse(*worse_is_censored(rel_base, bf, rel_arm, af), confidence)
        block["relative"] = _interval_fields(rel, lambda y: -y, increasing=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(valid & (lo == hi) & (a > 0) & (b > 0), np.log(b) - np.log(a), np.nan)
    else:  # AUC: exp(arm − base) − 1, a monotone map of the same per-seed values
        block["relative"] = _interval_fields(result, lambda y: _exp(-y) - 1.0, increasing=False)
        logs = np.where(valid & (lo == hi), lo, np.nan)
    present = ~np.isnan(b) | bf
    present_arm = ~np.isnan(a) | af
    block.update(both_missed=int((bf & af).sum()), missing=int((~present | ~present_arm).sum()))
    return MetricComparison(metric, block, result, logs)


def _display(result: PairedArrays, metric: str, scale: str) -> dict[str, Any]:
    """The JSON block of one analysis: ratios exp(y); differences arm − base = −y."""
    if scale == "ratio":
        fields = _interval_fields(result, _exp, increasing=True)
    else:
        fields = _interval_fields(result, lambda y: -y, increasing=False)
    n = int(result.n[0])
    level = float(result.ci_level[0]) if n else None
    return {
        "metric": metric,
        "scale": scale,
        **fields,
        "ci_level": level,
        "ci_kind": None if level is None else ("interval" if level >= RANGE_BELOW else "range"),
        "p_value": None if math.isnan(float(result.p_value[0])) else float(result.p_value[0]),
        "p_adjusted": None,
        "verdict": None,
        "n_pairs": n,
        "n_informative": int(result.positives[0] + result.negatives[0]),
        "positives": int(result.positives[0]),
        "negatives": int(result.negatives[0]),
        "ties": int(result.ties[0]),
        "unknown_sign": int(result.unknown[0]),
    }


def _interval_fields(result: PairedArrays, to: Callable[[float], float], increasing: bool) -> dict[str, Any]:
    """median (known, else null), its bounds, `bound`, and the interval ends, on the display scale."""
    if int(result.n[0]) == 0:
        return {"median": None, "median_low": None, "median_high": None, "bound": None,
                "ci_low": None, "ci_high": None}
    m_lo, m_hi = float(result.median_low[0]), float(result.median_high[0])
    kind = bound_kind(m_lo, m_hi)
    ends = [to(float(result.ci_low[0])), to(float(result.ci_high[0]))]
    med = [to(m_lo), to(m_hi)]
    if not increasing:
        ends.reverse()
        med.reverse()
        kind = {"≥": "≤", "≤": "≥"}.get(kind or "", kind)
    return {
        "median": json_number(med[0]) if kind is None else None,
        "median_low": json_number(med[0]),
        "median_high": json_number(med[1]),
        "bound": kind,
        "ci_low": json_number(ends[0]),
        "ci_high": json_number(ends[1]),
    }


def _exp(y: float) -> float:
    """exp that saturates to 0 and ∞ instead of overflowing."""
    if math.isnan(y):
        return math.nan
    return math.inf if y > 709.0 else math.exp(y)


def seed_spread(comparison: MetricComparison) -> float | None:
    """σ of the per-seed log-effects (None with fewer than 2 exact seeds)."""
    return spread(comparison.log_effects)
