"""`telebench run`, `validate`, `list` and `report`, for every experiment kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from telebench.config.overrides import MAX_PLANNED_UNITS, Overrides
from telebench.errors import UserError
from telebench.experiments.base import Experiment, RunOutcome, RunRequest
from telebench.experiments.registry import get_experiment, load_config
from telebench.experiments.runner import run_experiment
from telebench.render.console import make_console
from telebench.render.notes import print_notes
from telebench.results.schema import load_results
from telebench.results.store import default_out_dir


def show_suite(path: str, overrides: Overrides, *, plan: bool, console: Console | None = None) -> None:
    """What `validate` (plan=False) and `list` (plan=True) share; `list` plans for any machine, so it
    skips the CUDA check."""
    exp, config = load_config(path, overrides, check_devices=not plan)
    check_plan_size(exp, config, path)
    exp.show(config, console or make_console(), plan=plan)


def check_plan_size(exp: Experiment[Any], config: Any, path: str) -> None:
    """Refuse a plan too big to run (or to hold a journal of) before any work starts."""
    from telebench.experiments.pairs.plan import count_trials
    from telebench.experiments.pairs.schema import Suite

    if isinstance(config, Suite):  # counted, not expanded: a huge plan is refused before it is held
        count, noun = count_trials(config), "trial"
    else:
        units = [u for task in exp.plan(config) for u in task]
        count, noun = len(units), (units[0].noun if units else "unit")
    if count > MAX_PLANNED_UNITS:
        raise UserError(f"{path}: plans {count:,} {noun}s, over the limit of {MAX_PLANNED_UNITS:,} per run; "
                        "narrow it with --seeds or --cases, or split the suite into several.")


def run_suite(path: str, overrides: Overrides, request_for: Callable[[str], RunRequest] | None = None,
              console: Console | None = None, replicate: int | None = None, tune_only: bool = False) -> RunOutcome:
    """Load any suite and run it; `request_for(suite name)` says where and how (default: reports/<suite>-<time>).

    `replicate=K` (a train suite) reruns its primary comparisons on K fresh seeds into
    `<out>/replication-<n>/`, running the suite itself first where `<out>` holds no complete results
    (`telebench.commands.replicate`)."""
    console = console or make_console()
    exp, config = load_config(path, overrides)
    check_plan_size(exp, config, path)
    print_notes(config.notes, console)
    request = request_for(config.name) if request_for else RunRequest(out_dir=default_out_dir(config.name))
    if tune_only:
        _check_tunable(config, path, replicate)
    if replicate is not None:
        from telebench.commands.replicate import replicate as run_replication

        return run_replication(exp, config, request, replicate, console)
    outcome = run_experiment(exp, config, request, console)
    exp.render_terminal(outcome.results, console)
    console.print(f"results: {request.out_dir / 'results.json'}", highlight=False)
    if outcome.report_path is not None:
        console.print(f"report:  {outcome.report_path}", highlight=False)
    return outcome


def _check_tunable(config: object, path: str, replicate: int | None) -> None:
    """`--tune-only` needs a train suite with a `tune_lr` somewhere, and no `--replicate`."""
    from telebench.experiments.pairs.schema import Suite

    if replicate is not None:
        raise UserError("--tune-only and --replicate cannot be combined; tune first, then replicate.")
    cases = getattr(config, "cases", None)
    if not isinstance(config, Suite) or not any(case.tune_lr is not None for case in cases or []):
        raise UserError(f"--tune-only: {path} tunes no lr; add `tune_lr: {{grid: [0.3, 1, 3]}}` to its defaults or a "
                        "case, or drop --tune-only.")


def rerender(results_path: Path, out: Path | None, console: Console | None = None) -> Path:
    """Re-render report.md, its plots and the summary table from a results file of any kind alone."""
    console = console or make_console()
    data = load_results(results_path)
    exp = get_experiment(data["kind"])
    folder = out if out is not None else results_path.parent
    if (folder / "report.md").is_dir():
        raise UserError(f"{folder / 'report.md'}: is a folder, so the report cannot be written there; move it away, "
                        "or pass another folder with --out.")
    try:
        path = exp.write_report(data, folder)
    except OSError as exc:
        raise UserError(f"{folder}: the report cannot be written ({exc.strerror or exc}); free some space or fix the "
                        "folder's permissions, or pass another folder with --out.") from None
    exp.render_terminal(data, console)
    console.print(f"report written to {path}", highlight=False)
    return path
