"""The `telebench` command line. Each command is a thin wrapper over a module that does the work."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from telebench.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark symmetry teleportation: does it make training faster or better?",
)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Benchmark symmetry teleportation: does it make training faster or better?"""


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit 2."""
    try:
        app()
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


# ---- commands are registered below, one section each -------------------------------------------


@app.command("report")
def report_command(
    results: str = typer.Argument(..., help="A results.json written by `telebench run`."),
    out: str | None = typer.Option(
        None, "--out", help="Folder for report.md and plots \\[default: the folder of RESULTS]."
    ),
) -> None:
    """Re-render report.md, its plots and the summary table from a results file alone."""
    from pathlib import Path

    from telebench.render.load import load_results
    from telebench.render.markdown import write_report
    from telebench.render.terminal import render_terminal

    results_path = Path(results)
    data = load_results(results_path)
    path = write_report(data, Path(out) if out is not None else results_path.parent)
    console = Console()
    render_terminal(data, console)
    console.print(f"report written to {path}", highlight=False)


@app.command("compare")
def compare_command(
    base: str = typer.Argument(..., help="Baseline: a telebench results.json or a pytest-benchmark JSON."),
    new: str = typer.Argument(..., help="The file to check against BASE, of the same kind."),
    fail_on: list[str] | None = typer.Option(
        None,
        "--fail-on",
        help="METRIC:±N[%][:STAT], repeatable; + means an increase is bad, e.g. time_to_target:+10% "
        "or teleport_overhead:+0.05. Default: time_to_target:+10% steps_to_target:+10% misses:+0 "
        "speedup_time:-10% (pytest-benchmark files: median:+10%).",
    ),
    alpha: float = typer.Option(0.01, "--alpha", help="Significance level of the Mann-Whitney U test."),
    fail_on_improvement: bool = typer.Option(
        False,
        "--fail-on-improvement",
        help="Also fail on an improvement beyond a limit (for a pinned baseline).",
    ),
    markdown: str | None = typer.Option(
        None, "--markdown", help="Write a pull-request comment in markdown here."
    ),
    json_out: str | None = typer.Option(None, "--json", help="Write the comparison as JSON here."),
) -> None:
    """Compare two results files; exit 1 when a metric regressed beyond its limit, 2 on bad input."""
    from pathlib import Path

    from telebench.commands.compare import run_compare

    code = run_compare(
        Path(base),
        Path(new),
        fail_on or [],
        alpha=alpha,
        fail_on_improvement=fail_on_improvement,
        markdown=Path(markdown) if markdown else None,
        json_path=Path(json_out) if json_out else None,
    )
    raise typer.Exit(code)


# ---- suites: validate, list; the override options are shared with `run` -------------------------
# Each factory returns a fresh typer.Option, so every command declares the same flags identically:
#   seeds: str | None = seeds_option(), ...; then suite.overrides_from_options(seeds=seeds, ...).


def seeds_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--seeds", help="Seeds replacing every case's, e.g. 0,1,2 or 0-4.")


def devices_option() -> typer.models.OptionInfo:
    return typer.Option(
        None, "--devices", help="Devices replacing every case's: cpu, cuda, cuda:N or auto, comma-separated."
    )


def arms_option() -> typer.models.OptionInfo:
    return typer.Option(
        None,
        "--arms",
        help="Arm labels to keep, comma-separated; a built-in arm kind is added where missing.",
    )


def cases_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--cases", help="Case names to keep, comma-separated.")


def budget_steps_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--budget-steps", help="A step budget replacing every case's budget.")


def eval_every_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--eval-every", help="Steps between evaluations, replacing every case's.")


def set_option() -> typer.models.OptionInfo:
    return typer.Option(
        None,
        "--set",
        help="Edit the suite before validation, KEY.PATH=VALUE (YAML value), repeatable; "
        "e.g. --set defaults.batch_size=64 --set cases[0].optimizers[1].lr=0.01.",
    )


@app.command("validate")
def validate_command(
    suite: str = typer.Argument(..., help="The suite YAML file."),
    seeds: str | None = seeds_option(),
    devices: str | None = devices_option(),
    arms: str | None = arms_option(),
    cases: str | None = cases_option(),
    budget_steps: int | None = budget_steps_option(),
    eval_every: int | None = eval_every_option(),
    sets: list[str] | None = set_option(),
) -> None:
    """Check a suite without running it: exit 0 when valid, 2 with one sentence naming the key when not."""
    from telebench.config.overrides import overrides_from_options

    _show_suite(suite, overrides_from_options(seeds, devices, arms, budget_steps, eval_every, cases, sets), plan=False)


def _show_suite(path: str, overrides, plan: bool) -> None:
    """What `validate` and `list` share; `list` plans for any machine, so it skips the CUDA check."""
    from telebench.experiments.pairs.load import load_suite
    from telebench.experiments.pairs.plan import expand

    if _render_study(path, plan=plan):
        return
    loaded = load_suite(path, overrides, check_devices=not plan)
    console = Console()
    if loaded.kind == "meta":
        from telebench.experiments.meta.view import render_meta_plan, render_meta_validate

        (render_meta_plan if plan else render_meta_validate)(loaded.meta, console)
        return
    from telebench.experiments.pairs.view import render_plan, render_validate

    (render_plan if plan else render_validate)(loaded, expand(loaded), console)


def _render_study(path: str, plan: bool) -> bool:
    """`validate`/`list` of a `kind: correlation` study (run by `telebench correlate`); False for suites."""
    import yaml

    try:
        kind = (yaml.safe_load(open(path, encoding="utf-8")) or {}).get("kind")
    except Exception:  # unreadable or not a mapping: load_suite reports it properly
        return False
    if kind != "correlation":
        return False
    from telebench.experiments.correlation.schema import load_study

    study = load_study(path)
    console = Console()
    console.print(
        f"{path}: ok — correlation study, {len(study.cases)} cases, "
        f"{sum(c.networks for c in study.cases)} networks; run it with `telebench correlate {path}`",
        highlight=False,
    )
    if plan:
        for case in study.cases:
            console.print(
                f"  {case.name}: {case.networks} × {case.dataset.name} {'-'.join(map(str, case.model.widths))}"
                f" {case.optimizer.name} lr {case.optimizer.lr}, {case.budget_value:g} {case.budget_kind}",
                highlight=False,
            )
    return True


@app.command("list")
def list_command(
    suite: str = typer.Argument(..., help="The suite YAML file."),
    seeds: str | None = seeds_option(),
    devices: str | None = devices_option(),
    arms: str | None = arms_option(),
    cases: str | None = cases_option(),
    budget_steps: int | None = budget_steps_option(),
    eval_every: int | None = eval_every_option(),
    sets: list[str] | None = set_option(),
) -> None:
    """Show the plan: one row per case, optimizer, arm and device, the trial count and a rough time."""
    from telebench.config.overrides import overrides_from_options

    _show_suite(suite, overrides_from_options(seeds, devices, arms, budget_steps, eval_every, cases, sets), plan=True)


@app.command("run")
def run_command(
    suite: str = typer.Argument(..., help="The suite YAML file."),
    out: str | None = typer.Option(
        None,
        "--out",
        help="Output folder; rerunning into the same folder resumes \\[default: reports/<suite>-<timestamp>].",
    ),
    data_root: str | None = typer.Option(
        None, "--data-root", help="Folder holding dataset files (torchvision layout or raw IDX/CIFAR files)."
    ),
    executor: str | None = typer.Option(
        None, "--executor", help="local (default), process or ray; overrides the suite's `executor`."
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", min=1, help="Workers for --executor process or ray \\[default: one per CPU core]."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster: auto or HOST:PORT (--executor ray)."
    ),
    allow_shared_device: bool = typer.Option(
        False,
        "--allow-shared-device",
        help="Let timed trials share a device; the report then marks timings as shared.",
    ),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write report.md and plots after the run."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="torch intra-op threads per trial \\[default: 1; a meta suite's own `threads`]. One thread gives steady "
        "timings for the small MLPs telebench trains (more made them several times slower and erratic on a busy "
        "2-core machine); raise it for wide models. Recorded in the results' environment.",
    ),
    seeds: str | None = seeds_option(),
    devices: str | None = devices_option(),
    arms: str | None = arms_option(),
    cases: str | None = cases_option(),
    budget_steps: int | None = budget_steps_option(),
    eval_every: int | None = eval_every_option(),
    sets: list[str] | None = set_option(),
) -> None:
    """Train teleport arms against the baseline and report time and steps to the target."""
    from pathlib import Path

    from telebench.config.overrides import overrides_from_options
    from telebench.experiments.pairs.load import load_suite
    from telebench.experiments.pairs.plan import expand
    from telebench.experiments.pairs.run import default_out_dir, run_plan
    from telebench.render.terminal import render_terminal

    overrides = overrides_from_options(seeds, devices, arms, budget_steps, eval_every, cases, sets)
    loaded = load_suite(suite, overrides)
    import torch

    torch.set_num_threads(threads or 1)
    console = Console()
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    out_dir = Path(out) if out else default_out_dir(loaded.name)
    if loaded.kind == "meta":
        from telebench.experiments.meta.run import run_meta_suite

        run_meta_suite(loaded.meta, out_dir, console, threads=threads, report=report)
        return
    plan = expand(loaded)
    name = executor or loaded.executor
    options = {"jobs": jobs, "address": address, "allow_shared_device": allow_shared_device}
    if name != "local":
        options["threads"] = threads or 1  # workers use the same thread count as a local run, so results match
    outcome = run_plan(
        plan,
        loaded.name,
        suite,
        out_dir,
        executor_name=name,
        executor_options=options,
        data_root=data_root,
        console=console,
        write_report=report,
        description=loaded.description or "",
    )
    render_terminal(outcome.results, console)
    console.print(f"results: {out_dir / 'results.json'}", highlight=False)
    if outcome.report_path is not None:
        console.print(f"report:  {outcome.report_path}", highlight=False)
    if outcome.interrupted:
        raise typer.Exit(130)


# ---- profile ------------------------------------------------------------------------------------


@app.command("profile")
def profile_command(
    suite: str | None = typer.Argument(
        None, help="A suite YAML: profile each case's teleport arm on its model and data."
    ),
    case: str | None = typer.Option(None, "--case", help="Profile only this case of SUITE."),
    device: str | None = typer.Option(
        None, "--device", help="cpu or cuda \\[default: the case's device, or cpu]."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Output folder \\[default: reports/profile-<timestamp>]."
    ),
    model: str | None = typer.Option(None, "--model", help="Without SUITE: layer widths, e.g. 784-16-10-10."),
    activation: str = typer.Option("leaky_relu", "--activation", help="relu, leaky_relu, identity, tanh ..."),
    group: str = typer.Option("rescale", "--group", help="rescale, linear or gl-data."),
    objective: str = typer.Option("grad_norm", "--objective", help="The teleport objective."),
    direction: str = typer.Option("increase", "--direction", help="increase or decrease the objective."),
    steps: int = typer.Option(10, "--steps", help="Search steps per teleport."),
    lr: float = typer.Option(1e-2, "--lr", help="Teleport learning rate."),
    batch: int = typer.Option(200, "--batch", help="Teleport batch (also the gradient-evaluation batch)."),
    train_batch: int | None = typer.Option(
        None, "--train-batch", help="Training-step batch \\[default: --batch]."
    ),
    optimizer: str = typer.Option("sgd", "--optimizer", help="Optimizer of the training step."),
    train_lr: float = typer.Option(1e-2, "--train-lr", help="Learning rate of the training step."),
    dataset: str = typer.Option("synthetic-classification", "--dataset", help="Where the batches come from."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the model and the batches."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed warm-up rounds before measuring."),
    repeat: int = typer.Option(
        5, "--repeat", min=1, help="Measured teleports (and samples of the other timings)."
    ),
    sweep: list[str] | None = typer.Option(
        None, "--sweep", help="Scaling sweep AXIS=V1,V2,... with AXIS width, depth or batch; repeatable."
    ),
    no_trace: bool = typer.Option(
        False, "--no-trace", help="Plain timings only: no profiler, no phases, no trace.json."
    ),
    compile_: bool = typer.Option(
        False, "--compile", help="Also time torch.compile'd parts, compile time apart."
    ),
    compile_backend: str = typer.Option(
        "inductor", "--compile-backend", help="torch.compile backend for --compile."
    ),
    top: int = typer.Option(15, "--top", min=1, help="Operators listed per table."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="torch intra-op threads \\[default: torch's]."
    ),
    data_root: str | None = typer.Option(None, "--data-root", help="Folder holding dataset files."),
) -> None:
    """Where a teleport's time and memory go, what it costs in gradient evaluations and training steps,
    and how that grows with width, depth or batch."""
    from pathlib import Path

    from telebench.profile.command import SuiteSource, run_profile
    from telebench.profile.run import ProfileOptions
    from telebench.profile.subject import SubjectOptions
    from telebench.profile.sweep import parse_sweeps

    if suite is None and model is None:
        raise UserError("telebench profile needs a SUITE file or --model WIDTHS, e.g. --model 784-16-10-10.")
    if suite is not None and model is not None:
        raise UserError("give either a SUITE file or --model, not both; a suite's cases name their models.")
    if suite is None and case is not None:
        raise UserError("--case picks a case of a SUITE; give the suite file too, or drop --case.")
    source: SuiteSource | SubjectOptions
    if suite is not None:
        source = SuiteSource(suite, case, device)
    else:
        assert model is not None
        source = SubjectOptions(
            model=model,
            activation=activation,
            group=group,
            objective=objective,
            direction=direction,
            steps=steps,
            lr=lr,
            batch=batch,
            train_batch=train_batch,
            optimizer=optimizer,
            train_lr=train_lr,
            dataset=dataset,
            device=device or "cpu",
            seed=seed,
        )
    options = ProfileOptions(
        warmup=warmup,
        repeat=repeat,
        profiler=not no_trace,
        compile=compile_,
        compile_backend=compile_backend,
        sweeps=tuple(parse_sweeps(sweep or [])),
        top=top,
        data_root=data_root,
    )
    run_profile(source, options, Path(out) if out else None, threads, Console())


# ---- correlate ----------------------------------------------------------------------------------


@app.command("correlate")
def correlate_command(
    study: str = typer.Argument(
        ..., help="A correlation study YAML (kind: correlation), e.g. suites/paper-correlation.yaml."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Output folder; rerunning into it resumes \\[default: reports/<study>-<timestamp>]."
    ),
    jobs: int = typer.Option(
        1, "--jobs", help="Worker processes training networks in parallel (untimed work)."
    ),
    networks: int | None = typer.Option(
        None, "--networks", help="Networks per case, replacing the study's count."
    ),
    cases: str | None = typer.Option(None, "--cases", help="Case names to keep, comma-separated."),
    data_root: str | None = typer.Option(None, "--data-root", help="Folder holding dataset files."),
) -> None:
    """Train N networks per case, measure sharpness and curvature, and correlate them with validation loss."""
    from pathlib import Path

    from telebench.experiments.correlation.run import run_study
    from telebench.experiments.correlation.schema import load_study
    from telebench.experiments.pairs.run import default_out_dir

    loaded = load_study(study, networks=networks, cases=cases.split(",") if cases else None)
    out_dir = Path(out) if out else default_out_dir(loaded.name)
    console = Console()
    try:
        outcome = run_study(loaded, out_dir, jobs=jobs, data_root=data_root, console=console)
    except KeyboardInterrupt:
        console.print(
            f"interrupted: finished networks are kept in {out_dir}; rerun with --out {out_dir} to resume."
        )
        raise typer.Exit(130) from None
    console.print(f"results: {out_dir / 'results.json'}", highlight=False)
    console.print(f"report:  {outcome.report}", highlight=False)
