"""Render a CompareReport: a rich table for terminals, markdown for pull requests, JSON for machines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from telebench.analysis.compare.decision import Verdict
from telebench.analysis.compare.report import CompareReport, Comparison
from telebench.analysis.compare.samples import row_label

STYLES = {
    Verdict.REGRESSED: "bold red",
    Verdict.IMPROVED: "green",
    Verdict.NOISY: "yellow",
    Verdict.UNCHANGED: "dim",
}
MARKS = {Verdict.REGRESSED: "🔴", Verdict.IMPROVED: "🟢", Verdict.NOISY: "🟡", Verdict.UNCHANGED: "⚪"}
MISS_UNITS = ("s", "steps")  # units where +inf means the target was missed
NUMERIC_COLUMNS = ("n", "Base", "New", "Δ", "Limit", "p")
SECONDS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def format_value(value: float, unit: str) -> str:
    if math.isinf(value):
        return "miss" if unit in MISS_UNITS and value > 0 else ("∞" if value > 0 else "-∞")
    if unit == "s":
        return _seconds(value)
    if unit in ("steps", "count"):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    if unit == "x":
        return f"{_three_digits(value)}×"
    if unit == "ops/s":
        return f"{value:.4g}/s"
    return f"{value:.4g}"


def _seconds(value: float) -> str:
    scale, suffix = next(((s, u) for s, u in SECONDS if abs(value) >= s), SECONDS[-1])
    return f"{_three_digits(value / scale)} {suffix}"


def _three_digits(value: float) -> str:
    """Three significant digits that keep their trailing zeros: 1.00, 12.5, 840."""
    size = abs(value)
    return f"{value:.0f}" if size >= 99.95 else f"{value:.1f}" if size >= 9.995 else f"{value:.2f}"


def format_change(row: Comparison) -> str:
    """Δ in the threshold's terms: a percentage for relative rules, a signed amount for absolute ones."""
    c = row.change
    if c is None:
        return "—"
    if math.isinf(c):
        return "+∞" if c > 0 else "-∞"
    if row.threshold.relative:
        return f"{c * 100:+.1f}%"
    if row.unit == "s":
        return ("+" if c >= 0 else "-") + _seconds(abs(c))
    return f"{c:+.0f}" if row.unit in ("steps", "count") and c == int(c) else f"{c:+.3g}"


def format_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}"


def _header(report: CompareReport) -> str:
    """"❌ failed: 1 regressed, 2 noisy", "✅ passed: all unchanged" or "❌ nothing compared"."""
    counts = report.counts()
    tally = ", ".join(f"{counts[v.value]} {v.value}" for v in Verdict if v is not Verdict.UNCHANGED and counts[v.value])
    if not report.rows:  # compare_files refuses this (exit 2); a report built by hand says so too
        return "❌ nothing compared"
    if report.failures:
        return f"❌ failed: {tally}"
    return "✅ passed: " + (tally or "all unchanged")


def _layout(report: CompareReport) -> tuple[list[int], str]:
    """Which key fields get a column (those that vary), and a line naming the ones shared by all rows."""
    keys = {row.key for row in report.rows}
    if not keys:
        return list(range(len(report.key_fields))), ""
    shown = [i for i in range(len(report.key_fields)) if len({k[i] for k in keys}) > 1] or [0]
    one = next(iter(keys))
    shared = [f"{report.key_fields[i]} {one[i]}" for i in range(len(report.key_fields)) if i not in shown]
    return shown, ("All rows: " + ", ".join(shared) + ".") if shared else ""


def _cells(row: Comparison, shown: list[int]) -> list[str]:
    return [
        *(row.key[i] for i in shown),
        row.metric_label,
        f"{row.n_base}/{row.n_new}",
        format_value(row.base, row.unit),
        format_value(row.new, row.unit),
        format_change(row),
        row.threshold.limit_text,
        format_p(row.p_value),
        row.verdict.value,
        row.note,
    ]


def _columns(report: CompareReport, shown: list[int]) -> list[str]:
    return [report.key_fields[i].capitalize() for i in shown] + ["Metric", *NUMERIC_COLUMNS, "Verdict", "Note"]


def render_table(report: CompareReport) -> Table:
    """The comparison as a rich table: one line per row and metric, Δ and the verdict coloured."""
    shown, shared = _layout(report)
    table = Table(title=f"telebench compare: {_header(report)}", title_justify="left", caption=shared or None,
                  caption_justify="left")
    for i, name in enumerate(_columns(report, shown)):
        table.add_column(
            name,
            justify="right" if name in NUMERIC_COLUMNS else "left",
            style="dim" if name == "Note" else None,
            overflow="fold" if i < len(shown) else "ellipsis",
        )
    for row in report.rows:
        # Text, not str: names such as test_x[rescale] would otherwise be read as rich markup.
        cells = [Text(cell) for cell in _cells(row, shown)]
        style = STYLES[row.verdict]
        cells[-2].stylize(style)
        if row.verdict is not Verdict.UNCHANGED:
            cells[-5].stylize(style)
        table.add_row(*cells)
    return table


def print_report(report: CompareReport, console: Console) -> None:
    """Files, warnings, the table and the unmatched rows, for a terminal or a CI log."""
    console.print(f"base: {report.base.path} ({report.base.description})", highlight=False)
    console.print(f"new:  {report.new.path} ({report.new.description})", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(render_table(report))
    for side, keys in (("base", report.only_in_base), ("new", report.only_in_new)):
        if keys:
            console.print(f"only in {side}: " + "; ".join(row_label(k) for k in keys), highlight=False)


def _legend(report: CompareReport) -> str:
    if report.kind == "pytest-benchmark":
        values = "Values are the pytest-benchmark statistics named in the Metric column; n counts rounds."
    else:
        values = "Values are medians over seeds unless the Metric column names another statistic; n counts seeds; a missed target counts as ∞ (miss)."
    return (
        "Δ is measured in the terms of the limit (`--fail-on METRIC:±N[%]`; + means an increase is bad). "
        f"🔴 regressed: worse beyond the limit and significant (two-sided Mann-Whitney U, α={report.alpha:g}), "
        "or beyond it where no test is possible (see the note). 🟡 noisy: beyond the limit but not significant. "
        f"🟢 improved: better beyond the limit. ⚪ unchanged: within the limit. {values}"
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _shown_path(path: Path) -> str:
    """Relative paths as given (CI passes baseline/results.json); absolute ones by name only, so that a
    comment never leaks a runner's directory layout."""
    return path.name if path.is_absolute() else path.as_posix()


def render_markdown(report: CompareReport) -> str:
    """A pull-request comment: a header line, the files, warnings, the table and a short legend."""
    shown, shared = _layout(report)
    lines = [
        f"### telebench compare: {_header(report)}",
        "",
        f"Base `{_shown_path(report.base.path)}` ({report.base.description}) · New `{_shown_path(report.new.path)}` "
        f"({report.new.description})" + (f". {shared}" if shared else ""),
        "",
    ]
    if report.warnings:
        lines += [f"> ⚠️ {_md_cell(w)}  " for w in report.warnings] + [""]
    columns = _columns(report, shown)
    lines += [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if name in NUMERIC_COLUMNS else "---" for name in columns) + "|",
    ]
    for row in report.rows:
        cells = _cells(row, shown)
        cells[-2] = f"{MARKS[row.verdict]} {row.verdict.value}"
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    if not report.rows:
        lines.append("| " + " | ".join(["—"] * len(columns)) + " |")
    lines.append("")
    for side, keys in (("base", report.only_in_base), ("new", report.only_in_new)):
        if keys:
            lines += [f"Only in {side}: " + ", ".join(f"`{row_label(k)}`" for k in keys), ""]
    lines += [f"<sub>{_legend(report)}</sub>", ""]
    return "\n".join(lines)


def _json_number(value: float | None) -> float | str | None:
    """JSON has no infinity; write it as the string "inf" (a miss) so that null keeps meaning "absent"."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


def report_to_dict(report: CompareReport) -> dict[str, Any]:
    def key(k: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(report.key_fields, k, strict=True))

    return {
        "tool": "telebench compare",
        "kind": report.kind,
        "base": {"path": str(report.base.path), "description": report.base.description},
        "new": {"path": str(report.new.path), "description": report.new.description},
        "alpha": report.alpha,
        "fail_on_improvement": report.fail_on_improvement,
        "thresholds": [str(t) for t in report.thresholds],
        "exit_code": report.exit_code,
        "counts": report.counts(),
        "rows": [
            {
                **key(row.key),
                "metric": row.metric,
                "stat": row.stat,
                "threshold": str(row.threshold),
                "base": _json_number(row.base),
                "new": _json_number(row.new),
                "n_base": row.n_base,
                "n_new": row.n_new,
                "change": _json_number(row.change),
                "relative_change": _json_number(row.relative_change),
                "p_value": row.p_value,
                "verdict": row.verdict.value,
                "note": row.note,
            }
            for row in report.rows
        ],
        "warnings": report.warnings,
        "only_in_base": [key(k) for k in report.only_in_base],
        "only_in_new": [key(k) for k in report.only_in_new],
    }
