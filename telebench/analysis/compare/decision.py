"""The verdict for one metric of one row: did it cross its threshold, and is the crossing real?

A crossing counts only when a two-sided Mann-Whitney U test on the observations (seeds or rounds) is
significant at alpha, as asv decides. Where no test can decide (fewer than three observations a side,
or so few that even total separation cannot reach alpha, as with 3 against 3 seeds at alpha 0.01),
the crossing counts on its own and the note says so: a CI smoke suite with few seeds must still fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from scipy.stats import mannwhitneyu

from telebench.analysis.compare.samples import Sample
from telebench.analysis.compare.thresholds import MetricInfo, Threshold

MIN_OBSERVATIONS = 3


class Verdict(str, Enum):
    IMPROVED = "improved"
    REGRESSED = "regressed"
    UNCHANGED = "unchanged"
    NOISY = "noisy"  # crossed the threshold, but the test says it may be chance


@dataclass(frozen=True)
class Decision:
    base: float
    new: float
    change: float | None  # in the rule's terms: a fraction when relative, else absolute; None when undefined
    relative_change: float | None  # (new - base) / |base|, for display whatever the rule
    p_value: float | None
    verdict: Verdict
    note: str = ""


def change_between(base: float, new: float, relative: bool) -> float | None:
    """new - base (relative: divided by |base|), with misses (+inf) handled: a new miss is +inf, a
    cured miss -inf, and two misses are no change at all; None when the change is undefined."""
    if base == new:
        return 0.0
    if math.isnan(base) or math.isnan(new):
        return None
    if math.isinf(base) and math.isinf(new):
        return None
    if math.isinf(base) or math.isinf(new):
        return math.copysign(math.inf, new - base)
    if not relative:
        return new - base
    if base == 0:
        return math.copysign(math.inf, new)
    return (new - base) / abs(base)


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p-value an exact Mann-Whitney U test can give for samples of n and m."""
    return min(1.0, 2 / math.comb(n + m, n))


def decide(base: Sample, new: Sample, rule: Threshold, info: MetricInfo, alpha: float, noun: str) -> Decision:
    stat = rule.statistic(info)
    b, n = base.statistic(stat), new.statistic(stat)
    change = change_between(b, n, rule.relative)
    relative = change_between(b, n, relative=True)

    def verdict(v: Verdict, p: float | None = None, note: str = "") -> Decision:
        return Decision(b, n, change, relative, p, v, note)

    if change is None:
        return verdict(Verdict.UNCHANGED, note="undefined")
    if math.isinf(b) and b == n:
        return verdict(Verdict.UNCHANGED, note="∞ on both sides (missed target)")
    worse = change * rule.bad_direction
    if worse > rule.limit:
        crossed = Verdict.REGRESSED
    elif -worse > rule.limit:
        crossed = Verdict.IMPROVED
    else:
        return verdict(Verdict.UNCHANGED)

    if not info.testable:
        return verdict(crossed, note=f"no significance test applies to {info.name}")
    nb, nn = len(base.observations), len(new.observations)
    if nb == 0 or nn == 0:
        return verdict(crossed, note=f"no per-{noun[:-1]} data: counted without a significance test")
    if min(nb, nn) < MIN_OBSERVATIONS:
        return verdict(crossed, note=f"{nb} vs {nn} {noun}: too few for a significance test, counted without one")
    floor = smallest_p(nb, nn)
    if floor >= alpha:
        return verdict(
            crossed,
            note=f"{nb} vs {nn} {noun} cannot reach α={alpha:g} (smallest p {floor:.2g}): counted without a test",
        )
    p = float(mannwhitneyu(base.observations, new.observations, alternative="two-sided").pvalue)
    p = 1.0 if math.isnan(p) else p
    if p < alpha:
        return verdict(crossed, p)
    side = "worse" if crossed is Verdict.REGRESSED else "better"
    return verdict(Verdict.NOISY, p, note=f"{side} beyond the limit, but not significant at α={alpha:g}")
