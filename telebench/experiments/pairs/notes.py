"""Notes and warnings a train suite earns at validation: things that will run but that the author should
know before reading the results (steps past the budget, controls that do nothing, too few seeds)."""

from __future__ import annotations

from telebench.analysis.verdicts import ALPHA, min_pairs_for
from telebench.experiments.pairs.origin import Origin, teleport_settings
from telebench.experiments.pairs.schema import Case
from telebench.training.optimizer_state import keeps_state


def note(notes: list[str], text: str) -> None:
    """Settings inherited from defaults would repeat a note once per case; keep one."""
    if text not in notes:
        notes.append(text)


def note_schedules(case: Case, origin: Origin, notes: list[str]) -> None:
    if case.budget.steps is None:
        return
    for j, opt in enumerate(case.optimizers):
        for k, arm in enumerate(case.arms):
            if arm.kind == "baseline":
                continue
            schedule = teleport_settings(case, opt, arm).schedule
            late = [s for s in schedule.at_steps or [] if s >= case.budget.steps]
            if late:
                note(notes, f"{origin.teleport_key(j, k, 'schedule')}: steps {late} lie past the budget of "
                      f"{case.budget.steps} steps and never happen.")


def note_no_ops(case: Case, origin: Origin, notes: list[str]) -> None:
    """A control that cannot differ from the baseline is worth running (it shows up as `identical`), but
    the author should know before reading its row as evidence."""
    for k, arm in enumerate(case.arms):
        if arm.kind != "reset-only":
            continue
        for j, opt in enumerate(case.optimizers):
            schedule = teleport_settings(case, opt, arm).schedule
            if schedule.at_steps == [0] or schedule.at_epochs == [0]:
                note(notes, f"warning: {origin.teleport_key(j, k, 'schedule')}: reset-only resets only at step 0, "
                      "before the optimizer has any state, so it does nothing; its trials will equal the "
                      "baseline's (the suite still runs).")
            elif not keeps_state(opt.name, opt.kwargs):
                note(notes, f"warning: {origin.case_key('arms', k)}: reset-only with {opt.label} does nothing, "
                      f"because {opt.name} with momentum 0 keeps no optimizer state to reset; its trials will "
                      "equal the baseline's (the suite still runs).")


def note_lr_bumps(case: Case, origin: Origin, notes: list[str]) -> None:
    """An lr-bump arm never moves its weights, so a `transport` policy has nothing to carry the state through."""
    for k, arm in enumerate(case.arms):
        if arm.kind != "lr-bump":
            continue
        for j, opt in enumerate(case.optimizers):
            if teleport_settings(case, opt, arm).state_policy == "transport":
                note(notes, f"{origin.teleport_key(j, k, 'state_policy')}: an lr-bump arm keeps its optimizer "
                      "state where the teleport arm transports it: its weights never move.")


def note_seed_counts(cases: list[Case], notes: list[str]) -> None:
    """Say up front when no outcome could earn a verdict: the exact sign test needs a minimum of paired
    seeds, and Holm's correction over the report's comparisons raises it for the strongest one."""
    m = sum(len(c.optimizers) * len(c.devices) * sum(a.kind != "baseline" for a in c.arms) for c in cases)
    if m == 0:
        return
    alone, first = min_pairs_for(ALPHA), min_pairs_for(ALPHA / m)
    for case in cases:
        n = len(case.seeds)
        if n < alone:
            note(notes, f"warning: {case.name}: {n} paired seeds cannot support any verdict: the exact sign test "
                  f"needs at least {alone} (and {first} for the strongest of this suite's {m} comparisons under "
                  "Holm's correction); add seeds, or read its rows as `too few seeds`.")
        elif n < first:
            note(notes, f"{case.name}: {n} paired seeds; under Holm's correction over this suite's {m} comparisons "
                  f"even the strongest needs {first} seeds for a verdict.")
