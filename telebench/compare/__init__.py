"""`telebench compare`: regression checks between two result files, with exit codes for CI.

Reads telebench results files (docs/results-schema.md) or pytest-benchmark JSON files, matches their
rows, and gives each metric a verdict (improved, regressed, unchanged, noisy) under `--fail-on` rules.
"""

from telebench.compare.decision import Verdict
from telebench.compare.engine import compare_files
from telebench.compare.render import render_markdown, render_table, report_to_dict
from telebench.compare.report import CompareReport, Comparison
from telebench.compare.thresholds import Threshold, default_thresholds, parse_threshold

__all__ = [
    "CompareReport",
    "Comparison",
    "Threshold",
    "Verdict",
    "compare_files",
    "default_thresholds",
    "parse_threshold",
    "render_markdown",
    "render_table",
    "report_to_dict",
]
