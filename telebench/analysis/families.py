"""Pre-registered and exploratory comparisons: the Holm families of a suite that declared its comparisons.

A train suite may list, before it runs, its primary comparisons (`analysis.primary_comparisons`: an arm,
the arm it is compared `against` (the baseline unless named), optionally a case and an optimizer).
Each declaration expands to every (case, optimizer, device) of the results that has both arms, in the
order declared. Those comparisons form the **pre-registered** family: Holm's correction runs over them
alone, so a declared claim is not diluted by the comparisons nobody declared. Every other compared row
is **exploratory**, corrected over its own family, a hypothesis for fresh seeds rather than a finding.
Without a declaration there is one family, every compared row, as before.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

PREREGISTERED = "pre-registered"
EXPLORATORY = "exploratory"

GroupKey = tuple[str, str, str]  # case, optimizer, device
ComparisonKey = tuple[str, str, str, str, str]  # case, optimizer, device, arm, against


def declaration(entries: Any) -> list[dict[str, Any]] | None:
    """The well-formed entries of a results file's `analysis.primary_comparisons` ({arm, against, case,
    optimizer}, `against` defaulting to baseline); None where the suite declared none."""
    if not isinstance(entries, list) or not entries:
        return None
    out = []
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("arm"), str):
            out.append({"arm": entry["arm"], "against": str(entry.get("against") or "baseline"),
                        "case": entry.get("case"), "optimizer": entry.get("optimizer")})
    return out or None


def matches(entry: Mapping[str, Any], group: GroupKey) -> bool:
    """Whether a declared comparison's case and optimizer (None: any) admit this group."""
    return entry.get("case") in (None, group[0]) and entry.get("optimizer") in (None, group[1])


def expand(declared: Sequence[Mapping[str, Any]], groups: Mapping[GroupKey, Collection[str]]) -> list[ComparisonKey]:
    """The concrete declared comparisons, each once, in declaration order then in the groups' order:
    every group (case, optimizer, device) a declaration admits that holds both of its arms."""
    out: dict[ComparisonKey, None] = {}
    for entry in declared:
        arm, against = str(entry["arm"]), str(entry.get("against") or "baseline")
        for group, arms in groups.items():
            if matches(entry, group) and arm in arms and against in arms and arm != against:
                out.setdefault((*group, arm, against), None)
    return list(out)


def unmatched(declared: Sequence[Mapping[str, Any]], found: Collection[ComparisonKey]) -> list[dict[str, Any]]:
    """The declared comparisons that no group of these results holds (left out by --cases, say)."""
    return [dict(e) for e in declared
            if not any(matches(e, k[:3]) and (k[3], k[4]) == (e["arm"], e.get("against") or "baseline")
                       for k in found)]


def key_of(row: Mapping[str, Any]) -> ComparisonKey:
    """A compared row's comparison: its group, its arm and the arm it was paired with."""
    return (str(row["case"]), str(row["optimizer"]), str(row["device"]), str(row["arm"]),
            str(row.get("against") or row.get("baseline_arm")))
