"""`compare_files`: read two files, match their rows, and decide every metric under every threshold."""

from __future__ import annotations

import math
from pathlib import Path

from telebench.analysis.compare.decision import decide
from telebench.analysis.compare.load import read_source
from telebench.analysis.compare.report import CompareReport, Comparison, FileInfo
from telebench.analysis.compare.samples import RowKey, Sample, Source, row_label
from telebench.analysis.compare.thresholds import (
    KIND_NAMES,
    METRICS,
    Threshold,
    check_thresholds,
    default_thresholds,
)
from telebench.errors import UserError


def compare_files(
    base: Path,
    new: Path,
    thresholds: list[Threshold],
    alpha: float = 0.01,
    fail_on_improvement: bool = False,
) -> CompareReport:
    """Compare NEW against BASE; an empty `thresholds` list means the defaults for the file kind."""
    if not 0 < alpha < 1:
        raise UserError(f"--alpha {alpha:g} is outside (0, 1); pass a significance level such as 0.01.")
    old, cur = read_source(Path(base)), read_source(Path(new))
    if old.kind != cur.kind:
        raise UserError(
            f"{old.path} is {KIND_NAMES[old.kind]} but {cur.path} is {KIND_NAMES[cur.kind]}; "
            "compare two files of the same kind."
        )
    rules = list(thresholds) or default_thresholds(old.kind)
    check_thresholds(old.kind, rules)
    _check_comparable(old, cur)
    report = CompareReport(
        kind=old.kind,
        base=FileInfo(old.path, old.description),
        new=FileInfo(cur.path, cur.description),
        key_fields=old.key_fields,
        thresholds=rules,
        alpha=alpha,
        fail_on_improvement=fail_on_improvement,
        warnings=_context_warnings(old, cur) + old.notes + cur.notes,
        only_in_base=[key for key in old.rows if key not in cur.rows],
        only_in_new=[key for key in cur.rows if key not in old.rows],
    )
    _compare_rows(report, old, cur, explicit=bool(thresholds))
    return report


def _check_comparable(old: Source, cur: Source) -> None:
    """Exit 2, not a pass, when a side holds nothing or the two sides share no row: a wrong file must fail CI."""
    for side in (old, cur):
        if not side.rows:
            what = ("no trials or summary rows (every trial was skipped, or the run finished none); pass the "
                    "results.json of a run that finished trials" if side.kind == "telebench" else
                    "no benchmarks (its `benchmarks` list is empty); pass the JSON of a pytest run that ran benchmarks")
            raise UserError(f"{side.path}: holds {what}.")
    if not set(old.rows) & set(cur.rows):
        raise UserError(
            f"{old.path} and {cur.path} share no row ({' / '.join(old.key_fields)}), so nothing could be compared; "
            "check that the baseline is a run of the same suite."
        )


def _check_numbers(sample: Sample, stat: str | None, key: RowKey, metric: str, path: Path) -> None:
    """A NaN would compare as "unchanged" (or hide in a median) and pass; refuse it instead."""
    values = [*sample.observations, sample.statistic(stat)]
    if any(math.isnan(v) for v in values):
        raise UserError(f"{path}: {row_label(key)}: {metric} holds NaN (not a number), so it cannot be compared; "
                        "rerun the suite to rewrite the file.")


def _compare_rows(report: CompareReport, old: Source, cur: Source, explicit: bool) -> None:
    metrics = METRICS[old.kind]
    used: set[Threshold] = set()
    for key, before in old.rows.items():
        after = cur.rows.get(key)
        if after is None:
            continue
        for rule in report.thresholds:
            a, b = before.get(rule.metric), after.get(rule.metric)
            if a is None and b is None:
                continue  # not applicable to this row, e.g. a speed-up on the baseline arm
            if a is None or b is None:
                side = "base" if b is None else "new"
                report.warnings.append(f"{row_label(key)}: {rule.metric} is only in the {side} file, so it was not compared.")
                continue
            info = metrics[rule.metric]
            _check_numbers(a, rule.statistic(info), key, rule.metric, old.path)
            _check_numbers(b, rule.statistic(info), key, rule.metric, cur.path)
            used.add(rule)
            d = decide(a, b, rule, info, report.alpha, old.observation_noun)
            report.rows.append(
                Comparison(
                    key=key, metric=rule.metric, stat=rule.statistic(info), threshold=rule, unit=info.unit,
                    base=d.base, new=d.new, n_base=a.n, n_new=b.n, change=d.change,
                    relative_change=d.relative_change, p_value=d.p_value, verdict=d.verdict, note=d.note,
                )
            )
    unused = [rule for rule in report.thresholds if rule not in used]
    if not report.rows or (explicit and unused):
        rule = unused[0]
        raise UserError(
            f"--fail-on {rule}: no row of {old.path} and {cur.path} has {rule.metric} on both sides, so "
            f"{'nothing was compared' if not report.rows else 'this rule checked nothing'}; drop the rule or pass "
            "files that record the metric."
        )


def _context_warnings(old: Source, cur: Source) -> list[str]:
    """One line per fact (torch version, CPU, a case's target) that differs between the files."""
    warnings = []
    for label in sorted(old.context.keys() & cur.context.keys(), key=list(old.context).index):
        if old.context[label] != cur.context[label]:
            warnings.append(f"{label} differs: base {old.context[label]!r}, new {cur.context[label]!r}.")
    return warnings
