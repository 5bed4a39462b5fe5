"""The `telebench` command line: it parses options and hands them to telebench.commands, nothing more."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from telebench.commands.profile_cli import profile_command
from telebench.errors import UserError


def _flags_take_no_value(params: list[Any]) -> list[Any]:
    """This typer renders every option's type in --help, flags too (`--help <bool>`); a flag takes no value,
    so give it an empty metavar, which the help shows as nothing."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark symmetry teleportation: does it make training faster or better?",
)
err_console = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        import telebench

        print(f"telebench {telebench.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print telebench's version and exit.")] = False,
) -> None:
    """Benchmark symmetry teleportation: does it make training faster or better?"""


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit 2."""
    try:
        app()
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    finally:
        gc.freeze()  # exiting, the interpreter then skips collecting the run's objects (about 1 s of a quickstart)


# ---- options shared by run, validate and list (one declaration each) ----------------------------
Suite = Annotated[str, typer.Argument(help="The suite YAML file (any kind: train, meta or correlation).")]
Seeds = Annotated[str | None, typer.Option("--seeds", help="Seeds replacing every case's, e.g. 0,1,2 or 0-4.")]
Devices = Annotated[str | None, typer.Option(
    "--devices", help="Devices replacing every case's: cpu, cuda, cuda:N or auto, comma-separated.")]
Arms = Annotated[str | None, typer.Option(
    "--arms", help="Arm labels to keep, comma-separated; a built-in arm kind is added where missing.")]
Cases = Annotated[str | None, typer.Option("--cases", help="Case names to keep, comma-separated.")]
BudgetSteps = Annotated[int | None, typer.Option("--budget-steps", help="A step budget replacing every case's budget.")]
EvalEvery = Annotated[int | None, typer.Option("--eval-every", help="Steps between evaluations, replacing every case's.")]
AllowLarge = Annotated[bool, typer.Option(
    "--allow-large", help="Accept models estimated to need more than half of this machine's memory.")]
Networks = Annotated[int | None, typer.Option(
    "--networks", help="Networks per case of a correlation study, replacing the study's count.")]
Sets = Annotated[list[str] | None, typer.Option(
    "--set", help="Edit the suite before validation, KEY.PATH=VALUE (YAML value), repeatable; "
    "e.g. --set defaults.batch_size=64 --set cases[0].optimizers[1].lr=0.01.")]
Out = Annotated[str | None, typer.Option(
    "--out", help="Output folder; rerunning into the same folder resumes \\[default: reports/<suite>-<timestamp>].")]
DataRoot = Annotated[str | None, typer.Option(
    "--data-root", help="Folder holding dataset files (torchvision layout or raw IDX/CIFAR files).")]
Jobs = Annotated[int | None, typer.Option(
    "--jobs", min=1, help="Workers for --executor process or ray \\[default: one per CPU core]; "
    "given alone, more than 1 runs a process pool.")]


@app.command("validate", cls=_Command)
def validate_command(suite: Suite, seeds: Seeds = None, devices: Devices = None, arms: Arms = None,
                     cases: Cases = None, budget_steps: BudgetSteps = None, eval_every: EvalEvery = None,
                     networks: Networks = None, sets: Sets = None,
                     allow_large: AllowLarge = False) -> None:
    """Check a suite without running it: exit 0 when valid, 2 with one sentence naming the key when not."""
    from telebench.commands.suites import show_suite
    from telebench.config.overrides import overrides_from_options

    overrides = overrides_from_options(seeds, devices, arms, budget_steps, eval_every, cases, sets, networks,
                                       allow_large)
    show_suite(suite, overrides, plan=False)


@app.command("list", cls=_Command)
def list_command(suite: Suite, seeds: Seeds = None, devices: Devices = None, arms: Arms = None,
                 cases: Cases = None, budget_steps: BudgetSteps = None, eval_every: EvalEvery = None,
                 networks: Networks = None, sets: Sets = None,
                     allow_large: AllowLarge = False) -> None:
    """Show the plan: one row per case, optimizer, arm and device, the trial count and a rough time."""
    from telebench.commands.suites import show_suite
    from telebench.config.overrides import overrides_from_options

    overrides = overrides_from_options(seeds, devices, arms, budget_steps, eval_every, cases, sets, networks,
                                       allow_large)
    show_suite(suite, overrides, plan=True)


@app.command("run", cls=_Command)
def run_command(
    suite: Suite,
    out: Out = None,
    data_root: DataRoot = None,
    executor: Annotated[str | None, typer.Option(
        "--executor", help="local (default), process or ray; overrides the suite's `executor`.")] = None,
    jobs: Jobs = None,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster: auto or HOST:PORT (--executor ray).")] = None,
    allow_shared_device: Annotated[bool, typer.Option(
        "--allow-shared-device", help="Let timed trials share a device; the report then marks timings as shared.")] = False,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.md and plots after the run.")] = True,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1,
        help="torch intra-op threads per task \\[default: 1 for train suites; a meta suite's own `threads`]. One "
        "thread gives steady timings for the small MLPs telebench trains (more made them several times slower and "
        "erratic on a busy 2-core machine); raise it for wide models. Recorded in the results' environment.")] = None,
    seeds: Seeds = None, devices: Devices = None, arms: Arms = None, cases: Cases = None,
    budget_steps: BudgetSteps = None, eval_every: EvalEvery = None, networks: Networks = None, sets: Sets = None,
    allow_large: AllowLarge = False,
    replicate: Annotated[int | None, typer.Option(
        "--replicate", min=1, metavar="K",
        help="Train suites: rerun the primary comparisons (the pre-registered ones, else each teleport arm vs "
        "baseline) on K fresh seeds into <out>/replication-<n>/ and say whether each verdict held; runs the "
        "suite first where --out holds no complete results.")] = None,
    tune_only: Annotated[bool, typer.Option(
        "--tune-only", help="Train suites with `tune_lr`: run the tuning trials only and report the tuned lrs; a "
        "later run into the same --out reuses them.")] = False,
) -> None:
    """Run any suite — paired training, meta-learning or a correlation study — and report it."""
    from telebench.training.heap import paused

    with paused():  # importing torch triggers three full collections otherwise
        from telebench.commands.suites import run_suite
    from telebench.config.overrides import overrides_from_options
    from telebench.experiments.base import RunRequest
    from telebench.results.store import default_out_dir

    overrides = overrides_from_options(seeds, devices, arms, budget_steps, eval_every, cases, sets, networks,
                                       allow_large)

    def request(name: str) -> RunRequest:
        return RunRequest(out_dir=Path(out) if out else default_out_dir(name), data_root=data_root,
                          executor=executor, jobs=jobs, address=address,
                          allow_shared_device=allow_shared_device, threads=threads, report=report,
                          first_stage_only=tune_only)

    outcome = run_suite(suite, overrides, request, replicate=replicate, tune_only=tune_only)
    if outcome.interrupted:
        raise typer.Exit(130)


@app.command("correlate", cls=_Command)
def correlate_command(
    study: Annotated[str, typer.Argument(
        help="A correlation study YAML (kind: correlation), e.g. suites/paper-correlation.yaml.")],
    out: Out = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Worker processes training networks in parallel "
                                      "(untimed work).")] = 1,
    networks: Networks = None,
    cases: Cases = None,
    data_root: DataRoot = None,
) -> None:
    """An alias of `telebench run` for correlation studies, kept for its --jobs default of 1."""
    from telebench.training.heap import paused

    with paused():  # as in run_command
        from telebench.commands.suites import run_suite
    from telebench.config.overrides import overrides_from_options
    from telebench.experiments.base import RunRequest
    from telebench.results.store import default_out_dir

    def request(name: str) -> RunRequest:
        return RunRequest(out_dir=Path(out) if out else default_out_dir(name), data_root=data_root,
                          executor="process" if jobs > 1 else "local", jobs=jobs if jobs > 1 else None)

    outcome = run_suite(study, overrides_from_options(cases=cases, networks=networks), request)
    if outcome.interrupted:
        raise typer.Exit(130)


@app.command("report", cls=_Command)
def report_command(
    results: Annotated[str, typer.Argument(help="A results.json written by `telebench run` (any kind).")],
    out: Annotated[str | None, typer.Option(
        "--out", help="Folder for report.md and plots \\[default: the folder of RESULTS].")] = None,
) -> None:
    """Re-render report.md, its plots and the summary table from a results file alone."""
    from telebench.commands.suites import rerender

    rerender(Path(results), Path(out) if out is not None else None)


@app.command("export", cls=_Command)
def export_command(
    results: Annotated[str, typer.Argument(help="A results.json written by `telebench run` (any kind).")],
    format_: Annotated[str, typer.Option("--format", help="csv or parquet (parquet needs pip install "
                                         "'telebench\\[parquet]').")] = "csv",
    out: Annotated[str | None, typer.Option(
        "--out", help="The file to write \\[default: beside RESULTS, e.g. results.csv or results-history.csv].")] = None,
    history: Annotated[bool, typer.Option(
        "--history", help="One row per evaluation point (meta: per test step) instead of one per trial.")] = False,
) -> None:
    """A results file as a table for pandas or a spreadsheet: one row per trial (meta: per case, arm and test
    seed; correlation: per network)."""
    from telebench.commands.export import run_export

    run_export(Path(results), format_, Path(out) if out else None, history)


@app.command("compare", cls=_Command)
def compare_command(
    base: Annotated[str, typer.Argument(help="Baseline: a telebench results.json or a pytest-benchmark JSON.")],
    new: Annotated[str, typer.Argument(help="The file to check against BASE, of the same kind.")],
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on",
        help="METRIC:±N[%][:STAT], repeatable; + means an increase is bad, e.g. time_to_target:+10% "
        "or teleport_overhead:+0.05. Default: time_to_target:+10% steps_to_target:+10% misses:+0 "
        "speedup_time:-10% (pytest-benchmark files: median:+10%).")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level of the Mann-Whitney U test.")] = 0.01,
    fail_on_improvement: Annotated[bool, typer.Option(
        "--fail-on-improvement", help="Also fail on an improvement beyond a limit (for a pinned baseline).")] = False,
    markdown: Annotated[str | None, typer.Option("--markdown", help="Write a pull-request comment in markdown here.")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the comparison as JSON here.")] = None,
) -> None:
    """Compare two results files; exit 1 when a metric regressed beyond its limit, 2 on bad input."""
    from telebench.commands.compare import run_compare

    code = run_compare(Path(base), Path(new), fail_on or [], alpha=alpha, fail_on_improvement=fail_on_improvement,
                       markdown=Path(markdown) if markdown else None, json_path=Path(json_out) if json_out else None)
    raise typer.Exit(code)


app.command("profile", cls=_Command)(profile_command)
