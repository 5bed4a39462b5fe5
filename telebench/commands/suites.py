"""`telebench run`, `validate`, `list` and `report`, for every experiment kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from telebench.config.overrides import Overrides
from telebench.experiments.base import RunOutcome, RunRequest
from telebench.experiments.registry import get_experiment, load_config
from telebench.experiments.runner import run_experiment
from telebench.results.schema import load_results
from telebench.results.store import default_out_dir


def show_suite(path: str, overrides: Overrides, *, plan: bool, console: Console | None = None) -> None:
    """What `validate` (plan=False) and `list` (plan=True) share; `list` plans for any machine, so it
    skips the CUDA check."""
    exp, config = load_config(path, overrides, check_devices=not plan)
    exp.show(config, console or Console(), plan=plan)


def run_suite(path: str, overrides: Overrides, request_for: Callable[[str], RunRequest] | None = None,
              console: Console | None = None) -> RunOutcome:
    """Load any suite and run it; `request_for(suite name)` says where and how (default: reports/<suite>-<time>)."""
    console = console or Console()
    exp, config = load_config(path, overrides)
    for note in config.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    request = request_for(config.name) if request_for else RunRequest(out_dir=default_out_dir(config.name))
    outcome = run_experiment(exp, config, request, console)
    exp.render_terminal(outcome.results, console)
    console.print(f"results: {request.out_dir / 'results.json'}", highlight=False)
    if outcome.report_path is not None:
        console.print(f"report:  {outcome.report_path}", highlight=False)
    return outcome


def rerender(results_path: Path, out: Path | None, console: Console | None = None) -> Path:
    """Re-render report.md, its plots and the summary table from a results file of any kind alone."""
    console = console or Console()
    data = load_results(results_path)
    exp = get_experiment(data["kind"])
    path = exp.write_report(data, out if out is not None else results_path.parent)
    exp.render_terminal(data, console)
    console.print(f"report written to {path}", highlight=False)
    return path
