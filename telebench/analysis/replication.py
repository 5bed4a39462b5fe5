"""Did a verdict hold on fresh seeds? The comparisons a replication reruns, and the rule that judges it.

`telebench run SUITE --replicate K` reruns a suite's primary comparisons on K seeds that no earlier run
in its output folder used, and sets each original verdict beside the replication's:

- the comparisons: the suite's pre-registered ones (`analysis.preregistered`); without a declaration,
  every `teleport` arm (arm kind `teleport`, whatever its label) against the baseline;
- both verdicts are the report's own words, at α = 0.05 after Holm's correction over the family each
  was decided in: the original's over its report's family (the pre-registered family, or every
  comparison of a report without a declaration), the replication's over the replicated comparisons;
- the outcome (`outcome`), from the original verdict O and the replication's R:
  - O claims a difference (`faster` or `slower`): **held** when R is the same word; **did not hold**
    when R is the opposite word, `no clear difference` or `identical`; **inconclusive** when R is
    `too few seeds` (no outcome of the test could reach α on so few seeds) or the comparison has no
    replication row;
  - O is `no clear difference`: **held** when R is too (or `identical`); **did not hold** when R claims a
    difference; inconclusive otherwise;
  - O is `identical`: **held** when R is `identical`, **did not hold** when it is not; inconclusive
    without a row;
  - O is `too few seeds` (or missing): **inconclusive**, as the original claimed nothing to replicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from telebench.analysis.families import ComparisonKey, key_of

HELD = "held"
NOT_HELD = "did not hold"
INCONCLUSIVE = "inconclusive"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE)
CLAIMS = ("faster", "slower")
REPLICATED_KINDS = ("teleport",)  # the arms replicated vs the baseline when a suite declared nothing

Row = dict[str, Any]


def outcome(original: str | None, replication: str | None) -> str:
    """held / did not hold / inconclusive, by the rule in the module docstring."""
    if original in CLAIMS:
        if replication == original:
            return HELD
        if replication in (*CLAIMS, "no clear difference", "identical"):
            return NOT_HELD
        return INCONCLUSIVE
    if original == "no clear difference":
        if replication in (original, "identical"):
            return HELD
        return NOT_HELD if replication in CLAIMS else INCONCLUSIVE
    if original == "identical" and replication is not None:
        return HELD if replication == "identical" else NOT_HELD
    return INCONCLUSIVE


def primary_rows(results: Mapping[str, Any]) -> list[Row]:
    """The comparisons a replication reruns, as the original's rows (`against` set on each): the declared
    ones, else each `teleport`-kind arm against its baseline."""
    pre = (results.get("analysis") or {}).get("preregistered")
    if isinstance(pre, list) and (results.get("analysis") or {}).get("primary_comparisons"):
        rows = [r for r in pre if isinstance(r, dict)]
    else:
        rows = [r for r in results.get("summary") or [] if r.get("arm_kind") in REPLICATED_KINDS
                and r.get("baseline_arm") is not None and r["arm"] != r.get("baseline_arm")]
    return [{**r, "against": key_of(r)[4]} for r in rows]


def judge(original: Sequence[Row], replication: Sequence[Row]) -> list[Row]:
    """One line per original comparison: both verdicts, their p-values and seeds, and the outcome."""
    found: dict[ComparisonKey, Row] = {key_of(r): r for r in replication}
    out = []
    for row in original:
        key = key_of(row)
        again = found.get(key)
        out.append({
            "case": key[0], "optimizer": key[1], "device": key[2], "arm": key[3], "against": key[4],
            "primary_metric": row.get("primary_metric"),
            "original": _side(row),
            "replication": _side(again) if again is not None else None,
            "outcome": outcome(row.get("verdict"), None if again is None else again.get("verdict")),
        })
    return out


def _side(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("verdict", "median", "median_low", "median_high", "bound", "ci_low", "ci_high",
                                    "ci_level", "ci_kind", "p_value", "p_adjusted", "holm_m", "n_pairs", "seeds")}
