"""Pearson and Spearman correlation with paired-bootstrap 95 % intervals, and a verdict word.

The networks are resampled as (metric, loss) pairs, so an interval reflects how much the
correlation depends on which networks happened to be trained. Percentile intervals, seeded, as in
:mod:`telebench.analysis.stats`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from telebench.results.store import finite

METHODS = ("pearson", "spearman")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Correlation:
    method: str  # pearson | spearman
    r: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # two-sided test of no correlation (scipy)
    n: int

    @property
    def verdict(self) -> str:
        """positive / negative when the 95 % interval excludes 0, else "no clear correlation"."""
        if self.ci_low is not None and self.ci_low > 0:
            return "positive"
        if self.ci_high is not None and self.ci_high < 0:
            return "negative"
        return "no clear correlation"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    xm = x - x.mean(axis=axis, keepdims=True)
    ym = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xm * ym).sum(axis) / np.sqrt((xm * xm).sum(axis) * (ym * ym).sum(axis))


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pearson(sps.rankdata(x, axis=axis), sps.rankdata(y, axis=axis), axis)


_STATISTICS = {"pearson": _pearson, "spearman": _spearman}


def correlate(
    x: Sequence[float], y: Sequence[float], method: str, n_resamples: int = 4000, seed: int = 0
) -> Correlation:
    """Correlation of ``x`` with ``y`` (finite pairs only) with a bootstrap interval and p-value."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    if n < 3:
        return Correlation(method, None, None, None, None, n)
    xs, ys = (np.asarray(v) for v in zip(*pairs, strict=True))
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:  # a constant has no correlation with anything
        return Correlation(method, None, None, None, None, n)
    statistic = _STATISTICS[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample of tied values has no r: its interval end is reported as None
        test = sps.pearsonr(xs, ys) if method == "pearson" else sps.spearmanr(xs, ys)
        boot = sps.bootstrap((xs, ys), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                             confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    return Correlation(method, finite(float(statistic(xs, ys))), finite(low), finite(high),
                       finite(float(test.pvalue)), n)


@dataclass(frozen=True)
class Spread:
    """The median and range of a quantity over a case's networks (its finite values only)."""

    n: int
    median: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread(values: Sequence[float | None]) -> Spread:
    """Median, minimum and maximum of the finite values, and how many there are."""
    kept = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    if not len(kept):
        return Spread(0, None, None, None)
    return Spread(len(kept), float(np.median(kept)), float(kept.min()), float(kept.max()))


def training_summary(networks: Sequence[dict[str, Any]], max_epochs: float | None = None) -> dict[str, Any]:
    """How far a case's trained networks got, so a reader can see that they are trained: the epochs at which
    early stopping stopped them and those of their restored weights (absent for a fixed budget), how many ran
    to ``max_epochs``, and their validation and training accuracy and losses."""
    ok = [n for n in networks if n.get("status") == "ok"]
    summary = {key: spread([n.get(key) for n in ok]).to_dict()
               for key in ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "stop_epoch", "best_epoch")}
    stops = [n["stop_epoch"] for n in ok if n.get("stop_epoch") is not None]
    if max_epochs is not None and stops:
        summary["at_max_epochs"] = sum(s >= max_epochs - 1e-9 for s in stops)
    return summary
