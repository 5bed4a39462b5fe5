"""Reports from a results dict: a rich terminal table, and report.md with PNG plots."""

from telebench.report.load import load_results
from telebench.report.markdown import write_report
from telebench.report.terminal import render_terminal

__all__ = ["load_results", "render_terminal", "write_report"]
