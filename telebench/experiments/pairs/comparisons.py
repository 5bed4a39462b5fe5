"""Checks of a suite's pre-registered comparisons (`analysis.primary_comparisons`) against its cases.

Each comparison must name an arm (and an `against` arm, the baseline by default), and optionally a case
and an optimizer label, that the suite has; the two arms must differ, some case (and optimizer) must hold
both, and no comparison may repeat another. Names are checked against the cases as resolved (after
`--arms`, before `--cases`: a declared comparison of a case left out by `--cases` is reported as not run,
never dropped silently). Every problem is one sentence naming the key.
"""

from __future__ import annotations

import difflib

from telebench.errors import UserError
from telebench.experiments.pairs.schema import AnalysisConfig, Case, ComparisonConfig

__all__ = ["check_comparisons"]


def _fail(source: str, path: str, problem: str) -> UserError:
    return UserError(f"{source}: {path}: {problem}.")


def _choices(value: str, allowed: list[str]) -> str:
    near = difflib.get_close_matches(value, allowed, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"{hint}choose from {', '.join(allowed)}"


def check_comparisons(source: str, analysis: AnalysisConfig, cases: list[Case],
                      arms_option: list[str] | None = None) -> None:
    """Raise a UserError naming `analysis.primary_comparisons[i]...` for the first comparison that does not fit."""
    seen: dict[tuple[str, str, str | None, str | None], int] = {}
    for i, comparison in enumerate(analysis.primary_comparisons or []):
        key = f"analysis.primary_comparisons[{i}]"
        _check_one(source, key, comparison, cases, arms_option)
        record = (comparison.arm, comparison.against, comparison.case, comparison.optimizer)
        if record in seen:
            raise _fail(source, key, f"repeats primary_comparisons[{seen[record]}]; list each comparison once")
        seen[record] = i


def _check_one(source: str, key: str, comparison: ComparisonConfig, cases: list[Case],
               arms_option: list[str] | None) -> None:
    names = [c.name for c in cases]
    if comparison.case is not None and comparison.case not in names:
        raise _fail(source, f"{key}.case", f"the suite has no case {comparison.case!r}; "
                    f"{_choices(comparison.case, names)}")
    scope = [c for c in cases if comparison.case in (None, c.name)]
    where = f"case {comparison.case!r}" if comparison.case is not None else "any case"
    if comparison.optimizer is not None:
        labels = list(dict.fromkeys(str(o.label) for c in scope for o in c.optimizers))
        if comparison.optimizer not in labels:
            raise _fail(source, f"{key}.optimizer", f"no optimizer labelled {comparison.optimizer!r} in {where}; "
                        f"{_choices(comparison.optimizer, labels)}")
        scope = [c for c in scope if any(o.label == comparison.optimizer for o in c.optimizers)]
    arms = list(dict.fromkeys(a.name for c in scope for a in c.arms))
    kept = f" (--arms keeps {', '.join(arms_option)})" if arms_option is not None else ""
    for field in ("arm", "against"):
        label = getattr(comparison, field)
        if label not in arms:
            raise _fail(source, f"{key}.{field}", f"no arm {label!r} in {where}{kept}; {_choices(label, arms)}")
    if comparison.arm == comparison.against:
        raise _fail(source, f"{key}.against", f"compares arm {comparison.arm!r} with itself; name another arm "
                    "(the default is baseline)")
    if not any({comparison.arm, comparison.against} <= {a.name for a in c.arms} for c in scope):
        raise _fail(source, key, f"no case has both arm {comparison.arm!r} and arm {comparison.against!r}"
                    + (f" with optimizer {comparison.optimizer!r}" if comparison.optimizer is not None else "")
                    + "; compare arms of one case")
