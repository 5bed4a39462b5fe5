"""`telebench compare` behind the CLI: parse rules, compare, print, write the requested files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

from telebench.analysis.compare.engine import compare_files
from telebench.analysis.compare.thresholds import parse_threshold
from telebench.errors import UserError
from telebench.render.compare import print_report, render_markdown, report_to_dict
from telebench.render.console import make_console


def run_compare(
    base: Path,
    new: Path,
    fail_on: list[str],
    alpha: float,
    fail_on_improvement: bool,
    markdown: Path | None,
    json_path: Path | None,
    console: Console | None = None,
) -> int:
    """Do the whole command and return its exit code (0 pass, 1 regression); usage errors raise UserError."""
    console = console or _console()
    thresholds = [parse_threshold(rule) for rule in fail_on]
    report = compare_files(base, new, thresholds, alpha=alpha, fail_on_improvement=fail_on_improvement)
    print_report(report, console)
    text = render_markdown(report)
    if markdown is not None:
        _write(markdown, text, "--markdown")
    if json_path is not None:
        _write(json_path, json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n", "--json")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _write(Path(summary), text + "\n", "GITHUB_STEP_SUMMARY", append=True)
    return report.exit_code


def _console() -> Console:
    """A terminal keeps its width; a CI log (no terminal, where rich assumes 80 columns) gets a wide one so
    that the table does not wrap, unless COLUMNS says otherwise."""
    console = make_console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)
    return console


def _write(path: Path, text: str, option: str, append: bool = False) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if append else "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot be written ({exc.strerror}); pick a writable path.") from None
