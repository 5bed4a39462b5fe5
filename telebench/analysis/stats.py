"""Statistics over seeds: the paired rules, in one place, for few seeds (3 to 20) and censored misses.

Seeds are the unit and the arms of one seed are paired. The methods (details and proofs of validity in
`telebench.analysis.censored` and `telebench.analysis.verdicts`):

- test: the exact two-sided **sign test** on the seeds whose sign is known (ties dropped); valid under
  censoring, ties and any distribution;
- interval: the distribution-free **order-statistic interval** for the median, from the seeds'
  interval ends; exact or conservative, printed with the level it really reaches (93.75 % at 5 seeds,
  87.5 % at 4), and called a range below 80 %;
- a miss is right-censored at what the trial spent, never ∞: where only a bound on a median is known,
  the bound is what is reported;
- verdicts: **Holm** over the report's comparisons at α = 0.05; `identical` for arms whose
  trajectories equal the baseline's; `too few seeds` where no outcome could reach α.

`paired_speedup` and `paired_difference` are the single-comparison forms (no multiplicity correction)
for callers outside a summary; `telebench.analysis.summary` builds the report's rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from telebench.analysis.censored import (
    INTERVAL_NAME,
    RANGE_BELOW,
    TEST_NAME,
    PairedArrays,
    analyse,
    bound_kind,
    censored_log_ratios,
    worse_is_censored,
)
from telebench.analysis.verdicts import ALPHA, CORRECTION_NAME, VERDICTS, decide, min_pairs_for

__all__ = ["ALPHA", "MIN_PAIRS", "VERDICTS", "VERDICT_RULE", "json_number", "paired_speedup", "paired_difference"]

MIN_PAIRS = min_pairs_for(ALPHA)  # informative seeds an exact two-sided sign test needs at α = 0.05: 6
VERDICT_RULE = (
    f"*faster* or *slower* (with a loss as the primary metric, printed *lower loss* or *higher loss*) when "
    f"the {TEST_NAME} on the primary metric has p ≤ {ALPHA:g} after "
    f"{CORRECTION_NAME} correction over the report's comparisons; *identical* when every evaluation of "
    "every paired seed equals the baseline's bit for bit; *too few seeds* with fewer than "
    f"{MIN_PAIRS} informative seeds (seeds whose sign is known and not a tie), since no outcome of the "
    f"test could then reach {ALPHA:g}; otherwise *no clear difference*"
)


def json_number(x: float | None) -> float | str | None:
    """None and NaN → None; ±inf → "inf"/"-inf" (``float()`` reads it back); numbers unchanged."""
    if x is None or math.isnan(x):
        return None
    if isinstance(x, int):
        return x
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


@dataclass(frozen=True)
class PairedResult:
    """One arm against the baseline on a cost; ratios are baseline / arm (above 1: the arm is faster)."""

    n_pairs: int  # seeds compared (at least one arm reached the target)
    both_missed: int  # seeds left out: neither arm reached the target
    n_informative: int  # seeds whose sign is known and not a tie: what the sign test uses
    median: float | None  # the median speedup where it is known; None where only a bound is
    median_low: float | None  # the median lies in [median_low, median_high] (0 and ∞ allowed)
    median_high: float | None
    bound: str | None  # None (median known), "≥", "≤", "between" or "unknown"
    ci_low: float | None
    ci_high: float | None
    ci_level: float | None  # the level the interval really reaches
    p_value: float | None  # exact two-sided sign test; None without an informative seed
    verdict: str  # one of VERDICTS (no correction for multiplicity here)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form: JSON has no infinity, so ±inf is written as the string "inf" / "-inf"."""
        level = self.ci_level
        return {
            "median": json_number(self.median),
            "median_low": json_number(self.median_low),
            "median_high": json_number(self.median_high),
            "bound": self.bound,
            "ci_low": json_number(self.ci_low),
            "ci_high": json_number(self.ci_high),
            "ci_level": level,
            "ci_kind": None if level is None else ("interval" if level >= RANGE_BELOW else "range"),
            "p_value": self.p_value,
            "verdict": self.verdict,
            "n_pairs": self.n_pairs,
            "n_informative": self.n_informative,
            "both_missed": self.both_missed,
            "test": TEST_NAME,
            "interval": INTERVAL_NAME,
        }


def paired_speedup(
    base: Sequence[float | None],
    arm: Sequence[float | None],
    base_spent: Sequence[float | None] | None = None,
    arm_spent: Sequence[float | None] | None = None,
    alpha: float = ALPHA,
) -> PairedResult:
    """Median per-seed speedup base/arm with its order-statistic interval, sign-test p and verdict.

    `base[i]` and `arm[i]` are the same seed's cost (time or steps to target); None is a miss, which is
    right-censored at `*_spent[i]` (what that trial spent: its training clock or steps; 0 when not
    given, which bounds nothing). Seeds where both missed are left out and counted in `both_missed`.
    """
    if len(base) != len(arm):
        raise ValueError(f"paired_speedup needs equal-length inputs, got {len(base)} and {len(arm)}")
    n = len(base)
    b, a = _array(base), _array(arm)
    cb = _array(base_spent) if base_spent is not None else np.zeros(n)
    ca = _array(arm_spent) if arm_spent is not None else np.zeros(n)
    lo, hi, sign, valid = censored_log_ratios(b, np.nan_to_num(cb), a, np.nan_to_num(ca))
    res = analyse(lo, hi, sign, valid)
    both = int((np.isnan(b) & np.isnan(a)).sum())
    m_lo, m_hi = float(res.median_low[0]), float(res.median_high[0])
    kind = bound_kind(m_lo, m_hi) if res.n[0] else None
    word = str(decide(False, res.positives[0] + res.negatives[0], res.p_value[0], res.positives[0],
                      res.negatives[0], alpha))
    return PairedResult(
        n_pairs=int(res.n[0]),
        both_missed=both,
        n_informative=int(res.positives[0] + res.negatives[0]),
        median=_exp(m_lo) if res.n[0] and kind is None else None,
        median_low=_exp(m_lo) if res.n[0] else None,
        median_high=_exp(m_hi) if res.n[0] else None,
        bound=kind,
        ci_low=_exp(float(res.ci_low[0])) if res.n[0] else None,
        ci_high=_exp(float(res.ci_high[0])) if res.n[0] else None,
        ci_level=float(res.ci_level[0]) if res.n[0] else None,
        p_value=_p(res),
        verdict=word,
    )


def paired_difference(
    base: Sequence[float | None],
    arm: Sequence[float | None],
    seed: int = 0,
    *,
    min_pairs: int = MIN_PAIRS,
    by_p_value: bool = True,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Per-seed arm − baseline differences of a quality metric (e.g. final validation loss).

    Seeds where either side has no value (diverged, failed) are left out and counted in `missing`.
    Returns the median difference, its order-statistic interval and the level it reaches
    (`ci_level`), and the exact two-sided sign-test p-value. The word is "lower" or "higher" when, with
    at least `min_pairs` pairs, the sign test has p ≤ `alpha` (`by_p_value`, the default) or, with
    `by_p_value=False`, when the interval excludes 0; "too few seeds" with fewer pairs than
    `min_pairs`; else "no clear difference"; None when no seed has both values. (`seed` is unused:
    nothing here is random; it stays for old callers.)
    """
    pairs = list(zip(base, arm, strict=True))
    kept = [(b, a) for b, a in pairs if b is not None and a is not None]
    out: dict[str, Any] = {"n_pairs": len(kept), "missing": len(pairs) - len(kept)}
    if not kept:
        return {**out, "median": None, "ci_low": None, "ci_high": None, "ci_level": None, "p_value": None,
                "verdict": None}
    b = np.array([float(x) for x, _ in kept])
    a = np.array([float(y) for _, y in kept])
    no = np.zeros(len(kept), dtype=bool)
    res = analyse(*worse_is_censored(b, no, a, no))  # y = base − arm; reported as arm − base
    median = -float(res.median_low[0])
    low, high = -float(res.ci_high[0]), -float(res.ci_low[0])
    p = _p(res)
    if len(kept) < min_pairs:
        verdict = "too few seeds"
    elif (by_p_value and p is not None and p <= alpha) or (not by_p_value and (low > 0 or high < 0)):
        lower = res.positives[0] > res.negatives[0] if by_p_value else high < 0  # positive y: the arm lower
        verdict = "lower" if lower else "higher"
    else:
        verdict = "no clear difference"
    return {**out, "median": median, "ci_low": low, "ci_high": high, "ci_level": float(res.ci_level[0]),
            "p_value": p, "verdict": verdict}


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def _p(res: PairedArrays) -> float | None:
    p = float(res.p_value[0])
    return None if math.isnan(p) else p


def _exp(y: float) -> float:
    if math.isnan(y):
        return math.nan
    return math.inf if y > 709.0 else math.exp(y)
