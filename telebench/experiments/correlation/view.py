"""What `telebench validate` and `telebench list` print for a `kind: correlation` study."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from telebench.experiments.correlation.estimate import CaseEstimate, estimate_case
from telebench.experiments.correlation.report import metric_title
from telebench.experiments.correlation.schema import Study, StudyCase


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _cost(case: StudyCase, cost: CaseEstimate | None) -> str:
    if cost is None:
        return "no time estimate (the probe failed)"
    bound = "at most " if case.early_stopping is not None else ""
    return (f"≈ {cost.epoch_s:.2g} s/epoch + {cost.measure_s:.2g} s measuring per network: {bound}"
            f"{_minutes(cost.network_s)} a network, {bound}{_minutes(cost.total_s)} for the case")


def render_study(study: Study, console: Console, *, plan: bool) -> None:
    """One line for `validate`; with `plan` (`list`), one more line per case and a rough time estimate."""
    console.print(
        f"{escape(study.source)}: [bold green]ok[/] — correlation study, {len(study.cases)} cases, "
        f"{sum(c.networks for c in study.cases)} networks; run it with `telebench run {escape(study.source)}`",
        highlight=False,
    )
    if not plan:
        return
    total, bounded = 0.0, False
    for case in study.cases:
        widths = "-".join(map(str, case.model.widths or ()))
        metrics = "; ".join(f"{m.label} = {metric_title({'metric': m.kind, **m.options()})}" for m in case.metrics)
        cost = estimate_case(case)
        total += cost.total_s if cost is not None else 0.0
        bounded |= case.early_stopping is not None
        console.print(
            f"  {escape(case.name)}: {case.networks} × {case.dataset.name} {widths} {case.optimizer.name} "
            f"lr {case.optimizer.lr}, batch {case.batch_size}, {escape(case.budget_text())}; metrics: {escape(metrics)}",
            highlight=False,
        )
        console.print(f"    {_cost(case, cost)}", highlight=False)
    console.print(
        f"  rough time on one core (CPU clock, stand-in data, ±2×): {'at most ' if bounded else ''}{_minutes(total)}"
        + (" (early stopping counted to max_epochs)" if bounded else "") + "; `--jobs N` on N free cores divides it by ~N",
        highlight=False,
    )
