"""Paired comparisons over seeds that stay valid when trials miss their target, and with ties.

Per seed the paired effect y is oriented so that y > 0 means the arm did better (for a cost,
y = log(base / arm); for a loss, y = base − arm). A trial that misses its target is right-censored at
its budget: its cost is only known to exceed what it spent, so y is known only as an interval
[lo, hi], and its sign may or may not be known. Everything here works on those intervals and signs:

- **Test: exact two-sided sign test** on the seeds whose sign is known, ties (y = 0) dropped. Under no
  effect the two arms of a seed are exchangeable, so every known sign is a fair coin whatever the
  censoring, and the binomial p-value is exact at any n. With n informative seeds it cannot go below
  2·½ⁿ, so it needs 6 of them to reach α = 0.05.
- **Interval: distribution-free order-statistic interval for the median** of y: lower end the k-th
  smallest lower bound, upper end the k-th largest upper bound. Its level is at least
  1 − 2·P(Binom(n, ½) ≤ k − 1) for any distribution (ties included); interval ends only widen a
  censored seed's contribution, so censoring keeps it conservative. k is the largest whose level is
  ≥ 95 %, else 1 (then the interval is the range, and the level printed is what it really reaches).
- **Median**: with censoring only bounds may be known: the sample median lies between the median of
  the lower bounds and the median of the upper bounds. A median is a number only when those agree;
  otherwise it is reported as a bound ("≥ 1.28×"), never as infinity.

Seeds where neither arm has an informative value (both missed) carry no information and are left out
(the caller counts them). All functions take arrays of shape (draws, seeds), so the simulation tests
run the exact code the reports use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CONFIDENCE = 0.95  # the interval level aimed for
RANGE_BELOW = 0.80  # below this real level an interval is printed as the range it is

TEST_NAME = "exact two-sided sign test"
INTERVAL_NAME = "order-statistic interval for the median"


@lru_cache(maxsize=65536)
def half_binomial_cdf(k: int, n: int) -> float:
    """P(Binom(n, ½) ≤ k), exactly: Σᵢ₌₀ᵏ C(n, i) / 2ⁿ in integers, one correctly rounded division (the
    sign test's own arithmetic; scipy.stats, 0.6 s to import, agrees to 3e-14)."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2**n


@lru_cache(maxsize=4096)
def interval_level(n: int, k: int) -> float:
    """Coverage of [X₍ₖ₎, X₍ₙ₋ₖ₊₁₎] for the median of any distribution: 1 − 2·P(Binom(n, ½) ≤ k − 1)."""
    if n < 1 or k < 1:
        return 0.0
    return max(0.0, 1.0 - 2.0 * half_binomial_cdf(k - 1, n))


@lru_cache(maxsize=512)
def choose_k(n: int, confidence: float = CONFIDENCE) -> int:
    """The largest k whose interval level is ≥ `confidence` (the narrowest such interval), else 1."""
    best = 1
    for k in range(1, (n + 1) // 2 + 1):
        if interval_level(n, k) >= confidence:
            best = k
    return best


def sign_test_p(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Exact two-sided sign-test p-values, elementwise; NaN where no sign is known."""
    pos = np.asarray(positives, dtype=float)
    neg = np.asarray(negatives, dtype=float)
    m = pos + neg
    low = np.minimum(pos, neg)
    p = [min(1.0, 2.0 * half_binomial_cdf(int(k), int(n))) if n > 0 else math.nan
         for k, n in zip(low.ravel(), m.ravel(), strict=True)]
    return np.asarray(p, dtype=float).reshape(m.shape)


@dataclass(frozen=True)
class PairedArrays:
    """The analysis of D comparisons at once (arrays of shape (D,)), on the y scale."""

    n: np.ndarray  # seeds used (known or bounded value)
    positives: np.ndarray  # arm better, sign known
    negatives: np.ndarray  # arm worse, sign known
    ties: np.ndarray  # y = 0 exactly
    unknown: np.ndarray  # bounded, but the bound does not give the sign
    p_value: np.ndarray  # sign test; NaN with no informative seed
    k: np.ndarray
    ci_level: np.ndarray  # the level the interval really reaches (0 for one seed)
    ci_low: np.ndarray
    ci_high: np.ndarray
    median_low: np.ndarray  # the sample median lies in [median_low, median_high]
    median_high: np.ndarray


def analyse(
    lo: np.ndarray, hi: np.ndarray, sign: np.ndarray, valid: np.ndarray, confidence: float = CONFIDENCE
) -> PairedArrays:
    """Sign test, order-statistic interval and median bounds of interval-censored paired effects.

    `lo`, `hi`: bounds on y per seed (lo may be −∞, hi may be +∞; lo is never +∞, hi never −∞);
    `sign`: +1 / −1 / 0 where the sign is known, NaN where not; `valid`: the seed takes part.
    """
    lo, hi = np.atleast_2d(np.asarray(lo, dtype=float)), np.atleast_2d(np.asarray(hi, dtype=float))
    sign, valid = np.atleast_2d(np.asarray(sign, dtype=float)), np.atleast_2d(np.asarray(valid, dtype=bool))
    n = valid.sum(axis=1)
    pos = (valid & (sign > 0)).sum(axis=1)
    neg = (valid & (sign < 0)).sum(axis=1)
    ties = (valid & (sign == 0)).sum(axis=1)
    lows = np.sort(np.where(valid, lo, np.inf), axis=1)  # ascending; left-out seeds at the end
    highs = np.sort(np.where(valid, hi, np.inf), axis=1)
    ks = np.array([choose_k(int(m), confidence) if m > 0 else 1 for m in n])
    level = np.array([interval_level(int(m), int(k)) for m, k in zip(n, ks, strict=True)])
    rows = np.arange(lo.shape[0])
    safe_k = np.clip(ks - 1, 0, lo.shape[1] - 1)
    ci_low = lows[rows, safe_k]
    ci_high = highs[rows, np.clip(n - ks, 0, lo.shape[1] - 1)]  # the k-th largest of n valid highs
    return PairedArrays(
        n=n,
        positives=pos,
        negatives=neg,
        ties=ties,
        unknown=n - pos - neg - ties,
        p_value=sign_test_p(pos, neg),
        k=ks,
        ci_level=np.where(n > 0, level, np.nan),
        ci_low=np.where(n > 0, ci_low, np.nan),
        ci_high=np.where(n > 0, ci_high, np.nan),
        median_low=_sample_median(lows, n),
        median_high=_sample_median(highs, n),
    )


def _sample_median(sorted_values: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The median of the first n[i] entries of each sorted row (NaN where n is 0)."""
    rows = np.arange(sorted_values.shape[0])
    width = sorted_values.shape[1]
    a = sorted_values[rows, np.clip((n - 1) // 2, 0, width - 1)]
    b = sorted_values[rows, np.clip(n // 2, 0, width - 1)]
    with np.errstate(invalid="ignore"):
        mid = np.where(a == b, a, 0.5 * (a + b))  # a == b also covers ±∞ on both
    return np.where(n > 0, mid, np.nan)


def censored_log_ratios(
    base: np.ndarray, base_bound: np.ndarray, arm: np.ndarray, arm_bound: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-seed y = log(base / arm) of two costs (time or steps to target) as (lo, hi, sign, valid).

    `base`/`arm`: the cost where the target was reached, NaN where it was missed; `*_bound`: what a
    missed trial spent (its whole training clock or step count), so its true cost is > that bound.

    - both reached: exact (a cost of 0 on one side only gives a known sign and a one-sided bound);
    - arm missed: y < log(base / C_arm), negative for sure when base ≤ C_arm;
    - baseline missed: y > log(C_base / arm), positive for sure when arm ≤ C_base;
    - both missed: not valid (no information).
    """
    b, a = np.asarray(base, dtype=float), np.asarray(arm, dtype=float)
    cb, ca = np.nan_to_num(np.asarray(base_bound, dtype=float)), np.nan_to_num(np.asarray(arm_bound, dtype=float))
    b_ok, a_ok = ~np.isnan(b), ~np.isnan(a)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # log of the ratio: exp() gives it back
        exact = np.where((b == 0) & (a == 0), 0.0, np.log(b / a))
        arm_missed_hi = np.where(b > 0, np.log(b / np.maximum(ca, 0.0)), 0.0)
        base_missed_lo = np.where(a > 0, np.log(np.maximum(cb, 0.0) / a), 0.0)
    arm_missed_hi = np.where(np.isnan(arm_missed_hi), np.inf, arm_missed_hi)
    base_missed_lo = np.where(np.isnan(base_missed_lo), -np.inf, base_missed_lo)
    both = b_ok & a_ok
    only_base = b_ok & ~a_ok  # the arm missed
    only_arm = a_ok & ~b_ok  # the baseline missed
    lo = np.select(
        [both & np.isposinf(exact), both, only_base, only_arm], [0.0, exact, -np.inf, base_missed_lo], np.nan
    )
    hi = np.select(
        [both & np.isneginf(exact), both, only_base, only_arm], [0.0, exact, arm_missed_hi, np.inf], np.nan
    )
    sign = np.select(
        [both, only_base & (b <= ca), only_arm & (a <= cb)], [np.sign(exact), -1.0, 1.0], np.nan
    )
    return lo, hi, sign, both | only_base | only_arm


def worse_is_censored(
    base: np.ndarray, base_failed: np.ndarray, arm: np.ndarray, arm_failed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-seed y = base − arm of a never-censored metric (a loss) as (lo, hi, sign, valid).

    A diverged trial (`*_failed`) did worse than any finite value: against a finished partner the
    sign is known and the size is not (a one-sided bound at 0). Both diverged, or a value missing
    (a crash), leaves the seed out.
    """
    b, a = np.asarray(base, dtype=float), np.asarray(arm, dtype=float)
    bf, af = np.asarray(base_failed, dtype=bool), np.asarray(arm_failed, dtype=bool)
    both = ~bf & ~af & ~np.isnan(b) & ~np.isnan(a)
    arm_worse = af & ~bf & ~np.isnan(b)
    base_worse = bf & ~af & ~np.isnan(a)
    exact = np.where(both, b - a, 0.0)
    lo = np.select([both, arm_worse, base_worse], [exact, -np.inf, 0.0], np.nan)
    hi = np.select([both, arm_worse, base_worse], [exact, 0.0, np.inf], np.nan)
    sign = np.select([both, arm_worse, base_worse], [np.sign(exact), -1.0, 1.0], np.nan)
    return lo, hi, sign, both | arm_worse | base_worse


def spread(values: np.ndarray) -> float | None:
    """Sample standard deviation of the finite exact per-seed effects (None with fewer than 2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if v.size >= 2 else None


def bound_kind(median_low: float, median_high: float) -> str | None:
    """How much of a median is known, on the y scale: None (a number), "≥", "≤", "between", "unknown"."""
    if math.isnan(median_low) or math.isnan(median_high):
        return "unknown"
    if median_low == median_high:
        return None
    if math.isinf(median_low) and math.isinf(median_high):
        return "unknown"
    if math.isinf(median_high):
        return "≥"
    if math.isinf(median_low):
        return "≤"
    return "between"
