"""What `telebench validate` and `telebench list` print for a `kind: meta` suite."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from telebench.experiments.meta.suite import MetaCase, MetaSuite
from telebench.render.meta import arm_label
from telebench.render.notes import print_notes

# Rough meta-training cost per step and learned arm on one CPU thread (measured on a shared 2-core
# machine: 1-4 ms for the update LSTM, less for the teleport-only arm); test runs are negligible.
SECONDS_PER_META_STEP = 3e-3


def estimate_seconds(case: MetaCase) -> float:
    learned = sum(arm.update != "gd" or arm.teleport for arm in case.arms)
    return learned * case.meta_train.trajectories * case.meta_train.steps * SECONDS_PER_META_STEP


def _notes(suite: MetaSuite, console: Console) -> None:
    print_notes(suite.notes, console)


def render_meta_validate(suite: MetaSuite, console: Console) -> None:
    _notes(suite, console)
    cases, arms = len(suite.cases), sum(len(c.arms) for c in suite.cases)
    console.print(f"{escape(str(suite.source))}: [bold green]ok[/] — meta suite, {cases} case{'s' * (cases != 1)}, "
                  f"{arms} arms", highlight=False)


def render_meta_plan(suite: MetaSuite, console: Console) -> None:
    """One row per case and arm: what it learns, its group, meta-training and test scale."""
    _notes(suite, console)
    total = sum(estimate_seconds(c) for c in suite.cases)
    table = Table(title=escape(f"{suite.name} (meta): rough meta-training time {total / 60:.0f} min (±3×)"),
                  title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("case", "arm", "learns", "teleport", "meta-training", "test"):
        table.add_column(column)
    for case in suite.cases:
        for k, arm in enumerate(case.arms):
            spec = arm.to_spec()
            learns = {"gd": "—", "learned_lr": "step size + element", "lstm": "update"}[arm.update]
            if arm.update == "lstm" and arm.teleport:
                learns = "update + element"
            train = case.meta_train
            table.add_row(
                escape(case.name) if k == 0 else "",
                escape(f"{arm.name}: {arm_label({'update': spec.update, 'teleport': spec.teleport, 'lr': spec.lr})}"),
                learns,
                f"{case.teleport.group} ‖T‖={case.teleport.magnitude:g}" if arm.teleport else "—",
                f"{train.trajectories}×{train.steps}, unroll {train.unroll}" if learns != "—" else "—",
                f"{len(case.test.seeds)} seeds × {case.test.steps}",
                end_section=k == len(case.arms) - 1,
            )
    console.print(table)
