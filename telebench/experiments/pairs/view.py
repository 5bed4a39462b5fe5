"""What `telebench validate` and `telebench list` print: a one-line verdict, or the plan as a table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from telebench.experiments.pairs.estimate import Estimate, estimate_plan
from telebench.experiments.pairs.schema import Suite
from telebench.experiments.pairs.spec import BudgetSpec, ScheduleSpec, TeleportSpec, TrialSpec
from telebench.render.notes import print_notes


def describe_schedule(schedule: ScheduleSpec) -> str:
    if schedule.kind == "at_steps":
        return "steps " + ",".join(map(str, schedule.steps))
    if schedule.kind == "at_epochs":
        return "epochs " + ",".join(map(str, schedule.epochs))
    if schedule.kind == "every":
        return f"every {schedule.every} from {schedule.start}"
    return f"{schedule.count} batches of epoch " + ",".join(map(str, schedule.epochs))


def describe_budget(budget: BudgetSpec) -> str:
    return f"{budget.value:g} s clock" if budget.kind == "seconds" else f"{budget.value:g} {budget.kind}"


def describe_teleport(arm_kind: str, tp: TeleportSpec | None) -> str:
    if tp is None:
        return "—"
    when = describe_schedule(tp.schedule)
    if arm_kind == "reset-only":
        return f"reset at {when}"
    arrow = "↑" if tp.direction == "increase" else "↓"
    what = "random element" if arm_kind == "random-teleport" else f"{tp.objective}{arrow} ×{tp.steps}"
    return f"{tp.group} {what} at {when}, {tp.state_policy}"


def describe_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_estimate(estimate: Estimate) -> str:
    """The time part of the plan's title: probed, or static and why (the cases that fell back)."""
    time = describe_seconds(estimate.seconds)
    if estimate.probed:
        return f"rough time {time} one at a time (a short probe of this machine, scaled by the plan's steps)"
    reasons: dict[str, list[str]] = {}
    for case, reason in estimate.failed.items():
        reasons.setdefault(reason, []).append(case)
    why = "; ".join(f"{', '.join(cases)}: {reason}" for reason, cases in reasons.items()) or "not probed"
    if estimate.probed_trials == 0:
        return f"rough time {time} one at a time (±3×, static figures: {why})"
    return f"rough time {time} one at a time (probed; static figures, ±3×, for {why})"


def _print_notes(suite: Suite, console: Console) -> None:
    print_notes(suite.notes, console)


def render_validate(suite: Suite, plan: Sequence[TrialSpec], console: Console) -> None:
    _print_notes(suite, console)
    cases = len(suite.cases)
    console.print(f"{escape(str(suite.source))}: [bold green]ok[/] — {cases} case{'s' * (cases != 1)}, {len(plan)} trials",
                  highlight=False)


def render_plan(suite: Suite, plan: Sequence[TrialSpec], console: Console) -> None:
    """One row per case, optimizer, arm and device, seeds collapsed; columns equal in every row go to the title.
    Calibration baselines (they set a derived target and are never compared) get rows of their own."""
    _print_notes(suite, console)
    groups: dict[tuple[str, str, str, str, str], list[TrialSpec]] = {}
    for spec in plan:
        groups.setdefault((spec.case, spec.optimizer_label, spec.arm, spec.device, spec.role), []).append(spec)
    rows = []
    for (case, label, arm, device, role), specs in groups.items():
        first = specs[0]
        calibration = role == "calibration"
        rows.append({
            "case": case,
            "optimizer": f"{label} {first.optimizer.lr:g}",
            "arm": f"{arm} (calibration)" if calibration else arm if arm == first.arm_kind else f"{arm} ({first.arm_kind})",
            "device": device,
            "seeds": ",".join(str(s.seed) for s in specs),
            "budget": describe_budget(first.budget),
            "teleport": "— sets the target, never compared" if calibration else describe_teleport(first.arm_kind, first.teleport),
            "role": role,
        })
    compared = [r for r in rows if r["role"] == "compared"]
    calibrating = [r for r in rows if r["role"] == "calibration"]
    shared = [c for c in ("device", "seeds", "budget") if compared and len({r[c] for r in rows if c != "seeds" or
                                                                          r["role"] == "compared"}) == 1]
    if "seeds" in shared and len({r["seeds"] for r in calibrating}) > 1:
        shared.remove("seeds")
    columns = [c for c in rows[0] if c not in shared and c != "role"] if rows else []
    title = f"{suite.name}: {len(plan)} trials, {describe_estimate(estimate_plan(plan))}"
    if shared:
        title += "\nevery trial: " + ", ".join(f"{c} {compared[0][c]}" for c in shared)
        if "seeds" in shared and calibrating:
            title += f"; calibration seeds {calibrating[0]['seeds']}"
    table = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, overflow="fold", ratio=3 if column == "teleport" else None)
    for n, row in enumerate(rows):
        new_case = n == 0 or rows[n - 1]["case"] != row["case"]
        last_of_case = n == len(rows) - 1 or rows[n + 1]["case"] != row["case"]
        cells = [row[c] if c != "case" or new_case else "" for c in columns]
        table.add_row(*(escape(c) for c in cells), end_section=last_of_case)
    console.print(table)
    _print_models(plan, console)


def _print_models(plan: Sequence[TrialSpec], console: Console) -> None:
    """Per case: the model, its size, and the exact sites and group dimension each teleport group acts on
    (only for CNNs, ResNets, transformers, factory models, and MLPs on a site group)."""
    from telebench.experiments.pairs.models import SITE_GROUPS, describe_model

    groups: dict[tuple[str, Any, Any], list[str]] = {}
    for spec in plan:
        entry = groups.setdefault((spec.case, spec.model, spec.dataset), [])
        if spec.teleport is not None and spec.arm_kind in ("teleport", "random-teleport") \
                and spec.teleport.group not in entry:
            entry.append(spec.teleport.group)
    for (case, model, dataset), names in groups.items():
        if model.is_mlp and not any(g in SITE_GROUPS for g in names):
            continue
        console.print(f"{escape(case)}: {escape(describe_model(model, dataset, tuple(names)))}", highlight=False)
