"""Targets: what "reaching the target" means for each comparison, and where each trial first did.

A `baseline-final` target is the median final value of the **calibration** baseline trials of the
same (case, optimizer, device), relaxed by `slack`. Calibration trials (`spec["role"] ==
"calibration"`) are extra baseline runs on seeds disjoint from the compared ones, so the target is not
fitted to the very seeds it then judges. Files without calibration trials (older runs) fall back to the
compared baselines' median, and the target is marked `"peeked": true` so the report can say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from telebench.results.store import finite

Trial = dict[str, Any]
GroupKey = tuple[str, str, str]  # (case, optimizer, device): the arms sharing one baseline


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics improve upwards; losses downwards."""
    return "accuracy" in metric


def group_key(trial: Trial) -> GroupKey:
    return (str(trial["case"]), str(trial["optimizer"]), str(trial["device"]))


def is_baseline(trial: Trial) -> bool:
    """The arm kind decides (arm labels are free text); fall back to the label for spec-less trials."""
    kind = (trial.get("spec") or {}).get("arm_kind")
    return kind == "baseline" if kind is not None else trial.get("arm") == "baseline"


def role(trial: Trial) -> str:
    """"compared" (the default, and what files older than roles hold) or "calibration"."""
    return str((trial.get("spec") or {}).get("role") or trial.get("role") or "compared")


def is_calibration(trial: Trial) -> bool:
    return role(trial) == "calibration"


def target_spec(trial: Trial) -> dict[str, Any]:
    """The suite's target for this trial: metric, kind, value, slack."""
    spec = dict((trial.get("spec") or {}).get("target") or {})
    spec.setdefault("metric", "train_loss")
    spec.setdefault("kind", "baseline-final")
    spec.setdefault("value", None)
    spec.setdefault("slack", 0.0)
    return spec


def final_value(trial: Trial, metric: str) -> float | None:
    """The last finite evaluated value of `metric`, from history (the rows targets are checked on),
    else the trial's `final_<metric>` field."""
    for row in reversed(trial.get("history") or []):
        value = finite(row.get(metric))
        if value is not None:
            return value
    return finite(trial.get(f"final_{metric}"))


def baseline_target(baselines: Iterable[Trial], metric: str, slack: float) -> float | None:
    """Median over the baseline's successful seeds of its final `metric`, relaxed by `slack` in the
    helpful direction (loss·(1+slack), accuracy·(1−slack)); None when no baseline seed finished."""
    finals = [v for t in baselines if t.get("status") == "ok" and (v := final_value(t, metric)) is not None]
    if not finals:
        return None
    factor = 1.0 - slack if higher_is_better(metric) else 1.0 + slack
    return float(np.median(finals)) * factor


def first_crossing(history: Sequence[dict[str, Any]], metric: str, target: float) -> dict[str, Any] | None:
    """The first evaluation row whose `metric` reaches `target` (≤ for losses, ≥ for accuracy)."""
    up = higher_is_better(metric)
    for row in history:
        value = finite(row.get(metric))
        if value is not None and (value >= target if up else value <= target):
            return row
    return None


def resolve_targets(trials: list[Trial]) -> list[Trial]:
    """Return copies of `trials` with `target`, `steps_to_target` and `time_to_target_s` filled in.

    A baseline-final target is shared by all arms of one (case, optimizer, device): the calibration
    baselines' median final value when the group has finished calibration trials (`peeked: false`,
    `calibration_seeds` lists them), else the compared baselines' (`peeked: true`). An absolute target
    is the spec's value. Time-to-target is the training clock at the first crossing evaluation. Trials
    that are not `ok` (diverged, error, skipped) and trials without a target value are misses: both
    fields None (summaries then treat them as censored at what they spent).
    """
    compared: dict[GroupKey, list[Trial]] = {}
    calibration: dict[GroupKey, list[Trial]] = {}
    for trial in trials:
        if is_calibration(trial):
            calibration.setdefault(group_key(trial), []).append(trial)
        elif is_baseline(trial):
            compared.setdefault(group_key(trial), []).append(trial)

    resolved: list[Trial] = []
    for trial in trials:
        spec = target_spec(trial)
        metric = str(spec["metric"])
        target: dict[str, Any] = {"metric": metric, "value": None, "kind": spec["kind"]}
        if spec["kind"] == "absolute":
            target["value"] = finite(spec["value"])
        else:
            slack = float(spec["slack"] or 0.0)
            key = group_key(trial)
            calib = [t for t in calibration.get(key, []) if t.get("status") == "ok"]
            value = baseline_target(calib, metric, slack)
            peeked = value is None
            if peeked:
                value = baseline_target(compared.get(key, []), metric, slack)
            seeds = [] if peeked else sorted(int(t.get("seed") or 0) for t in calib
                                             if final_value(t, metric) is not None)
            target.update(value=value, peeked=peeked, calibration_seeds=seeds)
        row = None
        if target["value"] is not None and trial.get("status") == "ok":
            row = first_crossing(trial.get("history") or [], metric, target["value"])
        out = dict(trial)
        out["target"] = target
        out["steps_to_target"] = int(row["step"]) if row is not None else None
        out["time_to_target_s"] = float(row["train_clock_s"]) if row is not None else None
        resolved.append(out)
    return resolved
