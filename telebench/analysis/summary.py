"""From finished trials to the `summary` of results.json: targets, time-to-target and paired speedups.

Two pure steps, run after all trials finish (and again by `telebench report`):
1. `resolve_targets` fixes each comparison's target (absolute, or derived from the baseline's final
   values) and finds every trial's first evaluation that crosses it.
2. `summarise` reduces trials to one row per (case, optimizer, device, arm), pairing each arm with the
   baseline seed by seed. Misses are kept as infinite costs and counted, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from telebench.analysis.stats import json_number, paired_difference, paired_speedup

Trial = dict[str, Any]
GroupKey = tuple[str, str, str]  # (case, optimizer, device): the arms sharing one baseline

STATUSES = ("ok", "diverged", "error", "skipped")


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics improve upwards; losses downwards."""
    return "accuracy" in metric


def group_key(trial: Trial) -> GroupKey:
    return (str(trial["case"]), str(trial["optimizer"]), str(trial["device"]))


def is_baseline(trial: Trial) -> bool:
    """The arm kind decides (arm labels are free text); fall back to the label for spec-less trials."""
    kind = (trial.get("spec") or {}).get("arm_kind")
    return kind == "baseline" if kind is not None else trial.get("arm") == "baseline"


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
        value = _finite(row.get(metric))
        if value is not None:
            return value
    return _finite(trial.get(f"final_{metric}"))


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
        value = _finite(row.get(metric))
        if value is not None and (value >= target if up else value <= target):
            return row
    return None


def resolve_targets(trials: list[Trial]) -> list[Trial]:
    """Return copies of `trials` with `target`, `steps_to_target` and `time_to_target_s` filled in.

    A baseline-final target is shared by all arms of one (case, optimizer, device) and computed from
    that group's baseline arm (see `baseline_target`); an absolute target is the spec's value.
    Time-to-target is the training clock at the first crossing evaluation. Trials that are not `ok`
    (diverged, error, skipped) and trials without a target value are misses: both fields None.
    """
    baselines: dict[GroupKey, list[Trial]] = {}
    for trial in trials:
        if is_baseline(trial):
            baselines.setdefault(group_key(trial), []).append(trial)

    resolved: list[Trial] = []
    for trial in trials:
        spec = target_spec(trial)
        metric = str(spec["metric"])
        if spec["kind"] == "absolute":
            value = _finite(spec["value"])
        else:
            value = baseline_target(baselines.get(group_key(trial), []), metric, float(spec["slack"] or 0.0))
        row = None
        if value is not None and trial.get("status") == "ok":
            row = first_crossing(trial.get("history") or [], metric, value)
        out = dict(trial)
        out["target"] = {"metric": metric, "value": value, "kind": spec["kind"]}
        out["steps_to_target"] = int(row["step"]) if row is not None else None
        out["time_to_target_s"] = float(row["train_clock_s"]) if row is not None else None
        resolved.append(out)
    return resolved


def summarise(trials: list[Trial]) -> list[dict[str, Any]]:
    """One row per (case, optimizer, device, arm), baseline first, in order of first appearance.

    Expects trials that went through `resolve_targets`. Skipped trials are counted but take no part;
    every other trial is a seed, and a seed that missed the target stays in as an infinite cost.
    """
    groups: dict[GroupKey, dict[str, list[Trial]]] = {}
    for trial in trials:
        groups.setdefault(group_key(trial), {}).setdefault(str(trial["arm"]), []).append(trial)

    rows: list[dict[str, Any]] = []
    for (case, optimizer, device), arms in groups.items():
        base_label = next((a for a, ts in arms.items() if any(is_baseline(t) for t in ts)), None)
        base = arms.get(base_label, []) if base_label is not None else None
        order = ([base_label] if base_label is not None else []) + [a for a in arms if a != base_label]
        for arm in order:
            row = _arm_row(arms[arm], base if arm != base_label else None)
            rows.append(
                {
                    "case": case,
                    "optimizer": optimizer,
                    "device": device,
                    "arm": arm,
                    "baseline_arm": base_label,
                    **row,
                }
            )
    return rows


def _arm_row(trials: list[Trial], base: list[Trial] | None) -> dict[str, Any]:
    """Summary fields of one arm; `base` is the baseline's trials (None for the baseline row itself)."""
    trials = sorted(trials, key=lambda t: t.get("seed", 0))
    counts = {s: sum(t.get("status") == s for t in trials) for s in STATUSES}
    ran = [t for t in trials if t.get("status") != "skipped"]
    times = [_finite(t.get("time_to_target_s")) for t in ran]
    steps = [t.get("steps_to_target") if isinstance(t.get("steps_to_target"), int) else None for t in ran]
    target = (ran or trials or [{}])[0].get("target") or {}
    accepted = [r for t in ran for r in t.get("teleports") or [] if r.get("accepted", True)]
    row: dict[str, Any] = {
        "arm_kind": (trials[0].get("spec") or {}).get("arm_kind"),
        "n_seeds": len(ran),
        "seeds": [t.get("seed") for t in ran],
        "misses": sum(v is None for v in times),
        "diverged": counts["diverged"],
        "errors": counts["error"],
        "skipped": counts["skipped"],
        "target_metric": target.get("metric"),
        "target_value": target.get("value"),
        "time_to_target_s": describe(times, miss=math.inf),
        "steps_to_target": describe(steps, miss=math.inf),
        "final_train_loss": describe([_finite(t.get("final_train_loss")) for t in ran]),
        "final_val_loss": describe([_finite(t.get("final_val_loss")) for t in ran]),
        "final_val_accuracy": describe([_finite(t.get("final_val_accuracy")) for t in ran]),
        "teleport_overhead": describe([_finite(t.get("teleport_overhead")) for t in ran]),
        "teleports": sum(len(t.get("teleports") or []) for t in ran),
        "teleports_rejected": sum(len(t.get("teleports") or []) for t in ran) - len(accepted),
        "max_teleport_loss_change": _max_abs(relative_loss_change(r) for r in accepted),
        "max_teleport_held_out_loss_change": _max_abs(
            relative_loss_change(r, held_out=True) for r in accepted
        ),
        "final_test_loss": describe([_finite(t.get("final_test_loss")) for t in ran]),
        "final_test_accuracy": describe([_finite(t.get("final_test_accuracy")) for t in ran]),
        "speedup_time": None,
        "speedup_steps": None,
        "val_loss_change": None,
        "verdict": None,
    }
    if base is not None and ran:
        paired_time = paired_speedup(*_pair(base, ran, "time_to_target_s"))
        row["speedup_time"] = paired_time.to_dict()
        row["speedup_steps"] = paired_speedup(*_pair(base, ran, "steps_to_target")).to_dict()
        row["verdict"] = paired_time.verdict
        row["val_loss_change"] = paired_difference(*_pair(base, ran, "final_val_loss"))
    return row


def _pair(base: list[Trial], arm: list[Trial], field: str) -> tuple[list[float | None], list[float | None]]:
    """Align baseline and arm costs by seed; seeds missing (or skipped) on either side are left out."""
    base_by_seed = {t.get("seed"): t for t in base if t.get("status") != "skipped"}
    pairs = [(base_by_seed[t.get("seed")], t) for t in arm if t.get("seed") in base_by_seed]
    return [_finite(b.get(field)) for b, _ in pairs], [_finite(a.get(field)) for _, a in pairs]


def describe(values: Sequence[float | None], miss: float | None = None) -> dict[str, Any]:
    """Median, mean, min and max over seeds, plus the per-seed `values` (None where missing).

    With `miss` set (∞ for time-to-target), a missing value enters every statistic as that value, so
    misses are never dropped; otherwise statistics use the present values only and `n` says how many.
    Infinite results are written as "inf" (JSON has no infinity).
    """
    present = [v for v in values if v is not None]
    used = [v if v is not None else miss for v in values] if miss is not None else present
    out: dict[str, Any] = {"median": None, "mean": None, "min": None, "max": None}
    if used:
        arr = np.asarray(used, dtype=float)
        out = {
            k: json_number(float(f(arr)))
            for k, f in (("median", np.median), ("mean", np.mean), ("min", np.min), ("max", np.max))
        }
    out["n"] = len(present)
    out["values"] = [json_number(v) for v in values]
    return out


def relative_loss_change(record: dict[str, Any], held_out: bool = False) -> float | None:
    """|after − before| / |before| of one teleport, from the record's own field when it has one."""
    prefix = "held_out_" if held_out else ""
    stored = _finite(record.get(f"{prefix}relative_loss_change"))
    if stored is not None:
        return abs(stored)
    before, after = _finite(record.get(f"{prefix}loss_before")), _finite(record.get(f"{prefix}loss_after"))
    if before is None or after is None:
        return None
    return abs(after - before) / max(abs(before), 1e-30)


def _max_abs(values: Iterable[float | None]) -> float | None:
    present = [abs(v) for v in values if v is not None]
    return max(present) if present else None


def _finite(x: Any) -> float | None:
    """A finite float, or None for null, NaN, ±inf and non-numbers (e.g. the "inf" strings)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None
