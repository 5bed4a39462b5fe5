"""What `telebench validate` and `telebench list` print: a one-line verdict, or the plan as a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from telebench.experiments.pairs.estimate import Estimate, estimate_plan
from telebench.experiments.pairs.schema import Suite
from telebench.experiments.pairs.spec import (
    TELEPORTING_ARMS,
    BudgetSpec,
    ScheduleSpec,
    TeleportSpec,
    TrialSpec,
)
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
    if arm_kind == "lr-bump":  # its weights never move: keep and transport both keep the state
        policy = "reset" if tp.state_policy == "reset" else "keep"
        return (f"lr ×(grad-norm factor of {tp.group} {tp.objective}{arrow} ×{tp.steps}) for {tp.bump_steps} "
                f"steps at {when}, {policy}")
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
    tuning = sum(1 for t in plan if t.role == "tuning")
    tuned = f" ({tuning} tuning; the compared lrs are tuned from the grid)" if tuning else ""
    console.print(f"{escape(str(suite.source))}: [bold green]ok[/] — {cases} case{'s' * (cases != 1)}, {len(plan)} "
                  f"trials{tuned}", highlight=False)


def _plan_row(role: str, specs: Sequence[TrialSpec], tuned: Mapping[str, str]) -> dict[str, str]:
    """One row of `list`: a compared arm, the calibration baselines, or a case × optimizer's tuning trials.
    `tuned` maps each case whose lrs the tuning stage has yet to choose to its tuning metric."""
    first, arm, label = specs[0], specs[0].arm, specs[0].optimizer_label
    lr = "tuned from the grid" if first.case in tuned else f"{first.optimizer.lr:g}"
    teleport = describe_teleport(first.arm_kind, first.teleport)
    if role == "calibration":
        arm, teleport = f"{arm} (calibration)", "— sets the target, never compared"
    elif role == "tuning":
        arm, lr = f"{arm} (tuning)", "grid " + ",".join(f"{g:g}" for g in dict.fromkeys(s.optimizer.lr for s in specs))
        teleport = f"— picks the lr by median {tuned.get(first.case, 'metric')}, never compared"
    elif arm != first.arm_kind:
        arm = f"{arm} ({first.arm_kind})"
    return {"case": first.case, "optimizer": f"{label} {lr}", "arm": arm, "device": first.device,
            "seeds": ",".join(str(s) for s in dict.fromkeys(s.seed for s in specs)),
            "budget": describe_budget(first.budget), "teleport": teleport, "role": role}


def render_plan(suite: Suite, plan: Sequence[TrialSpec], console: Console) -> None:
    """One row per case, optimizer, arm and device, seeds collapsed; columns equal in every row go to the title.
    Calibration baselines (they set a derived target and are never compared) and a `tune_lr` case's tuning
    trials (one row per optimizer, its grid of lrs) get rows of their own."""
    _print_notes(suite, console)
    groups: dict[tuple[str, str, str, str, str], list[TrialSpec]] = {}
    for spec in plan:
        groups.setdefault((spec.case, spec.optimizer_label, spec.arm, spec.device, spec.role), []).append(spec)
    tuned = {c.name: c.tune_lr.metric for c in suite.cases if c.tune_lr is not None and not c.tuned_lr}
    rows = [_plan_row(key[-1], specs, tuned) for key, specs in groups.items()]
    compared = [r for r in rows if r["role"] == "compared"]
    calibrating = [r for r in rows if r["role"] in ("calibration", "tuning")]
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
    from telebench.experiments.pairs.pretrain import describe_pretraining  # torch, so only when listing

    if (pretraining := describe_pretraining(plan)) is not None:
        console.print(escape(pretraining), highlight=False)


def _print_models(plan: Sequence[TrialSpec], console: Console) -> None:
    """Per case: the model, its size, and the exact sites and group dimension each teleport group acts on
    (only for CNNs, ResNets, transformers, factory models, and MLPs on a site group)."""
    from telebench.experiments.pairs.models import SITE_GROUPS, describe_model

    groups: dict[tuple[str, Any, Any], list[str]] = {}
    for spec in plan:
        entry = groups.setdefault((spec.case, spec.model, spec.dataset), [])
        if spec.teleport is not None and spec.arm_kind in TELEPORTING_ARMS \
                and spec.teleport.group not in entry:
            entry.append(spec.teleport.group)
    for (case, model, dataset), names in groups.items():
        if model.is_mlp and not any(g in SITE_GROUPS for g in names):
            continue
        console.print(f"{escape(case)}: {escape(describe_model(model, dataset, tuple(names)))}", highlight=False)
