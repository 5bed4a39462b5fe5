"""Statistics over seeds: bootstrap intervals and paired speedups with a significance test.

Seeds are few (3 to 10), so everything here is distribution-free: medians, percentile bootstrap
intervals and the Wilcoxon signed-rank test. A trial that misses its target is kept as an infinite
time (never dropped), so speedups can be 0 or ∞ and the helpers below handle both.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
MIN_PAIRS = 3  # two seeds on the same side of 1 already give a percentile-bootstrap CI excluding 1
VERDICTS = ("faster", "slower", "no clear difference")
VERDICT_RULE = (
    "a verdict needs at least 3 paired seeds; it is *faster* when the 95% CI of the median speedup lies "
    "above 1, or when the Wilcoxon p < 0.05 and the median is above 1; *slower* when the CI lies below 1, "
    "or p < 0.05 and the median is below 1; otherwise *no clear difference*"
)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[..., float] = np.median,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `values` (seeded, so reports are reproducible).

    Percentile rather than BCa: BCa's jackknife breaks on infinite values and is unstable for a median
    of a handful of seeds. Infinities are replaced by sentinels just beyond the finite range for the
    resampling, and interval ends beyond that range are reported as ±inf; this is exact for order
    statistics such as the median. With fewer than 2 distinct values the interval is degenerate,
    (stat, stat). NaN values are ignored.
    """
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    if np.unique(data).size < 2:
        point = float(stat(data))
        return (point, point)
    finite = data[np.isfinite(data)]
    if finite.size == 0:  # only +inf and -inf: nothing finite to resample against
        return (-math.inf, math.inf)
    lo_f, hi_f = float(finite.min()), float(finite.max())
    margin = (hi_f - lo_f) + 1.0
    sub = np.where(data == math.inf, hi_f + margin, np.where(data == -math.inf, lo_f - margin, data))
    res = sps.bootstrap(
        (sub,),
        stat,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (_unsentinel(low, lo_f, hi_f, margin), _unsentinel(high, lo_f, hi_f, margin))


def _unsentinel(x: float, lo_f: float, hi_f: float, margin: float) -> float:
    """Map an interval end back from sentinel space.

    An end that involves a sentinel (alone, or averaged with a finite value for an even-sized median)
    lies at least margin/2 beyond the finite range and is infinite; anything else beyond the range is
    rounding in the percentile and is clipped to the range.
    """
    half = 0.5 * margin * (1 - 1e-9)
    if x >= hi_f + half:
        return math.inf
    if x <= lo_f - half:
        return -math.inf
    return min(max(x, lo_f), hi_f)


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of one arm with the baseline over seeds; ratios are baseline / arm."""

    ratios: tuple[float, ...]  # per compared seed, in input order; 0 = arm missed, inf = baseline missed
    n_pairs: int  # seeds compared
    both_missed: int  # seeds excluded because neither arm reached the target
    median: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # Wilcoxon signed-rank, two-sided; None when untestable
    verdict: str  # one of VERDICTS

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form: JSON has no infinity, so ±inf is written as the string "inf" / "-inf"."""
        return {
            "median": json_number(self.median),
            "ci_low": json_number(self.ci_low),
            "ci_high": json_number(self.ci_high),
            "p_value": self.p_value,
            "verdict": self.verdict,
            "n_pairs": self.n_pairs,
            "both_missed": self.both_missed,
        }


def json_number(x: float | None) -> float | str | None:
    """None and NaN → None; ±inf → "inf"/"-inf" (``float()`` reads it back); numbers unchanged."""
    if x is None or math.isnan(x):
        return None
    if isinstance(x, int):
        return x
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def paired_speedup(
    base: Sequence[float | None],
    arm: Sequence[float | None],
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedResult:
    """Median per-seed speedup base/arm with a bootstrap 95% CI, a Wilcoxon p-value and a verdict.

    `base[i]` and `arm[i]` are the same seed's cost (time or steps to target); None is a miss.
    A miss on the arm gives ratio 0, a miss on the baseline ∞; seeds where both missed carry no
    information about the ratio and are excluded (counted in `both_missed`).

    The p-value is scipy's two-sided Wilcoxon signed-rank test on the log-ratios (a test of a
    multiplicative shift). ±∞ log-ratios are replaced by ±(1 + 2·max|finite|), which keeps every sign
    and rank. Ratios of exactly 1 are dropped (zero_method="wilcox"); with fewer than 2 non-tied
    pairs p is None. Note that with n pairs the smallest possible p is 2/2ⁿ (0.0625 for 5 seeds).

    Verdict rule (needs ≥ MIN_PAIRS = 3 pairs, otherwise "no clear difference"):
      faster  if ci_low > 1, or (p < 0.05 and median > 1);
      slower  if ci_high < 1, or (p < 0.05 and median < 1);
      else    "no clear difference".
    """
    if len(base) != len(arm):
        raise ValueError(f"paired_speedup needs equal-length inputs, got {len(base)} and {len(arm)}")
    ratios: list[float] = []
    both_missed = 0
    for b, a in zip(base, arm, strict=True):
        if b is None and a is None:
            both_missed += 1
        elif a is None:
            ratios.append(0.0)
        elif b is None:
            ratios.append(math.inf)
        else:
            ratios.append(_ratio(float(b), float(a)))
    n = len(ratios)
    if n == 0:
        return PairedResult((), 0, both_missed, None, None, None, None, "no clear difference")
    median = float(np.median(ratios))
    low, high = bootstrap_ci(ratios, np.median, n_resamples=n_resamples, seed=seed)
    p = wilcoxon_log_ratio(ratios)
    return PairedResult(
        tuple(ratios), n, both_missed, median, low, high, p, _verdict(n, median, low, high, p)
    )


def _ratio(b: float, a: float) -> float:
    """b/a for non-negative costs; an arm that reached the target at cost 0 (already there) is ∞ faster."""
    if a == 0.0:
        return 1.0 if b == 0.0 else math.inf
    return b / a


def wilcoxon_log_ratio(ratios: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value that the log-ratios are centred on 0 (None if untestable)."""
    with np.errstate(divide="ignore"):
        logs = np.log(np.asarray(ratios, dtype=float))
    logs = logs[logs != 0.0]
    if logs.size < 2:
        return None
    finite = logs[np.isfinite(logs)]
    big = 1.0 + 2.0 * (float(np.abs(finite).max()) if finite.size else 0.0)
    logs = np.clip(logs, -big, big)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and tie warnings: the method choice is scipy's
        result = sps.wilcoxon(logs, zero_method="wilcox", alternative="two-sided")
    p = float(result.pvalue)
    return None if math.isnan(p) else p


def _verdict(n: int, median: float, low: float, high: float, p: float | None) -> str:
    if n < MIN_PAIRS:
        return "no clear difference"
    significant = p is not None and p < ALPHA
    if low > 1.0 or (significant and median > 1.0):
        return "faster"
    if high < 1.0 or (significant and median < 1.0):
        return "slower"
    return "no clear difference"


def paired_difference(
    base: Sequence[float | None],
    arm: Sequence[float | None],
    seed: int = 0,
    *,
    min_pairs: int = MIN_PAIRS,
    by_p_value: bool = True,
) -> dict[str, Any]:
    """Per-seed arm − baseline differences of a quality metric (e.g. final validation loss).

    Seeds where either side has no value (diverged, failed) are left out and counted in `missing`.
    Returns the median difference, a bootstrap 95 % interval and a two-sided Wilcoxon signed-rank
    p-value (None with fewer than 2 non-zero differences); the verdict word is "lower", "higher" or
    "no clear difference" by the same rule as speedups: with at least `min_pairs` pairs, the interval
    excludes 0, or (when `by_p_value`) p < ALPHA with the median on that side. The verdict is None
    when no seed has both values.
    """
    pairs = list(zip(base, arm, strict=True))
    diffs = [a - b for b, a in pairs if a is not None and b is not None]
    out: dict[str, Any] = {"n_pairs": len(diffs), "missing": len(pairs) - len(diffs)}
    if not diffs:
        return {**out, "median": None, "ci_low": None, "ci_high": None, "p_value": None, "verdict": None}
    arr = np.asarray(diffs, dtype=float)
    median = float(np.median(arr))
    low, high = bootstrap_ci(arr, seed=seed)
    nonzero = arr[arr != 0.0]
    p: float | None = None
    if nonzero.size >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(sps.wilcoxon(nonzero, alternative="two-sided").pvalue)
        p = None if math.isnan(p) else p
    significant = by_p_value and p is not None and p < ALPHA
    verdict = "no clear difference"
    if len(diffs) >= min_pairs and (low > 0 or (significant and median > 0)):
        verdict = "higher"
    elif len(diffs) >= min_pairs and (high < 0 or (significant and median < 0)):
        verdict = "lower"
    return {**out, "median": median, "ci_low": low, "ci_high": high, "p_value": p, "verdict": verdict}
