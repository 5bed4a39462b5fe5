"""What `telebench validate` and `telebench list` print for a `kind: correlation` study."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from telebench.experiments.correlation.report import metric_title
from telebench.experiments.correlation.schema import Study


def render_study(study: Study, console: Console, *, plan: bool) -> None:
    """One line for `validate`; with `plan` (`list`), one more line per case."""
    console.print(
        f"{escape(study.source)}: [bold green]ok[/] — correlation study, {len(study.cases)} cases, "
        f"{sum(c.networks for c in study.cases)} networks; run it with `telebench run {escape(study.source)}`",
        highlight=False,
    )
    if not plan:
        return
    for case in study.cases:
        widths = "-".join(map(str, case.model.widths or ()))
        metrics = "; ".join(f"{m.label} = {metric_title({'metric': m.kind, **m.options()})}" for m in case.metrics)
        console.print(
            f"  {escape(case.name)}: {case.networks} × {case.dataset.name} {widths} {case.optimizer.name} "
            f"lr {case.optimizer.lr}, {case.budget_value:g} {case.budget_kind}; metrics: {escape(metrics)}",
            highlight=False,
        )
