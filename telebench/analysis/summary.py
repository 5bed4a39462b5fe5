"""From finished trials to the `summary` of results.json: targets, time-to-target and honest verdicts.

Two pure steps, run after all trials finish (and again by `telebench report`):
1. `resolve_targets` (in `telebench.analysis.targets`) fixes each comparison's target (absolute, or
   from the calibration baselines) and finds every trial's first evaluation that crosses it.
2. `summarise` reduces the compared trials to one row per (case, optimizer, device, arm), pairing
   each arm with the baseline seed by seed on every metric (`telebench.analysis.paired`). A miss is
   right-censored at what it spent, never ∞ and never dropped. The report's primary metric decides
   each row's verdict, after Holm correction over all the report's comparisons
   (`telebench.analysis.verdicts`); the other metrics stand beside it, each corrected over its own
   family. Calibration trials set targets only: they are never compared and get no row.
   A suite that declared its primary comparisons gets two families instead, pre-registered and
   exploratory, each corrected apart, and a row per declared comparison (`telebench.analysis.families`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from telebench.analysis.censored import INTERVAL_NAME, TEST_NAME
from telebench.analysis.families import EXPLORATORY, PREREGISTERED, declaration, expand, key_of
from telebench.analysis.paired import (
    BLOCKS,
    PRIMARY_METRICS,
    MetricComparison,
    Pair,
    auc_log_loss,
    compare,
    seed_spread,
)
from telebench.analysis.stats import json_number
from telebench.analysis.targets import (
    GroupKey,
    Trial,
    baseline_target,
    final_value,
    first_crossing,
    group_key,
    higher_is_better,
    is_baseline,
    is_calibration,
    resolve_targets,
    target_spec,
)
from telebench.analysis.verdicts import (
    ALPHA,
    CORRECTION_NAME,
    LOSS_WORDS,
    decide,
    holm,
    identical_trajectories,
    min_pairs_for,
    noop_reason,
    seeds_needed,
)
from telebench.results.store import finite as _finite

__all__ = [
    "STATUSES", "GroupKey", "Trial", "analyse", "baseline_target", "describe", "describe_censored", "final_value",
    "first_crossing", "group_key", "higher_is_better", "is_baseline", "is_calibration", "relative_loss_change",
    "resolve_targets", "summarise", "summarise_families", "target_spec", "PRIMARY_METRICS",
]

STATUSES = ("ok", "diverged", "error", "skipped")
COST_WORDS = {"faster": "faster", "slower": "slower"}
COMPARISON_FIELDS = (  # the primary metric's result, copied to the top of every compared row
    "median", "median_low", "median_high", "bound", "scale", "ci_low", "ci_high", "ci_level", "ci_kind",
    "p_value", "p_adjusted", "n_pairs", "n_informative", "positives", "negatives", "ties", "unknown_sign",
)
ROW_FIELDS = ("test", "interval", "correction", "holm_m", "alpha", "min_pairs", "spread", "seeds_needed",
              "seeds_needed_holm", "identical", "noop_reason")  # None on baseline rows


def summarise(trials: list[Trial], primary_metric: str = "time_to_target", alpha: float = ALPHA,
              declared: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (case, optimizer, device, arm), baseline first, in order of first appearance.

    Expects trials that went through `resolve_targets`. Skipped trials are counted but take no part;
    every other compared trial is a seed. `primary_metric` (one of `PRIMARY_METRICS`) carries the
    verdicts, at level `alpha` after Holm correction over every row that has a p-value on it and is not
    `identical`; with `declared` comparisons, over each family apart (`summarise_families`).
    """
    return summarise_families(trials, primary_metric, alpha, declared)[0]


def summarise_families(trials: list[Trial], primary_metric: str = "time_to_target", alpha: float = ALPHA,
                       declared: Sequence[Mapping[str, Any]] | None = None
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The summary rows, and one row per pre-registered comparison (`telebench.analysis.families`).

    Without `declared` the second list is empty and Holm runs over every compared row. With it, the
    declared comparisons (vs the baseline: the summary's own row; vs another arm: a row of the same form
    with `baseline_arm` that arm) are one Holm family and every other compared row another; each row
    says which in `family` (null on baseline rows)."""
    if primary_metric not in PRIMARY_METRICS:
        raise ValueError(f"unknown primary metric {primary_metric!r}; choose one of {', '.join(PRIMARY_METRICS)}")
    groups: dict[GroupKey, dict[str, list[Trial]]] = {}
    for trial in trials:
        if not is_calibration(trial):
            groups.setdefault(group_key(trial), {}).setdefault(str(trial["arm"]), []).append(trial)

    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, MetricComparison]] = []
    for (case, optimizer, device), arms in groups.items():
        base_label = next((a for a, ts in arms.items() if any(is_baseline(t) for t in ts)), None)
        base = arms.get(base_label, []) if base_label is not None else None
        order = ([base_label] if base_label is not None else []) + [a for a in arms if a != base_label]
        for arm in order:
            row, found = _arm_row(arms[arm], base if arm != base_label else None)
            rows.append({"case": case, "optimizer": optimizer, "device": device, "arm": arm,
                         "baseline_arm": base_label, **row})
            comparisons.append(found)
    if declared is None:
        _decide(rows, comparisons, primary_metric, alpha)
        return rows, []
    pre, pre_found = _declared_rows(declared, groups, rows, comparisons)
    mine = {id(r) for r in pre}
    rest = [i for i, r in enumerate(rows) if id(r) not in mine]
    _decide(pre, pre_found, primary_metric, alpha)
    _decide([rows[i] for i in rest], [comparisons[i] for i in rest], primary_metric, alpha)
    for row, found in zip(rows, comparisons, strict=True):
        row["family"] = PREREGISTERED if id(row) in mine else (EXPLORATORY if found else None)
    for row in pre:
        row["family"] = PREREGISTERED
    return rows, [dict(r) for r in pre]


def _declared_rows(declared: Sequence[Mapping[str, Any]], groups: dict[GroupKey, dict[str, list[Trial]]],
                   rows: list[dict[str, Any]], comparisons: list[dict[str, MetricComparison]]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, MetricComparison]]]:
    """The pre-registered family: the summary's row where a declaration is against the baseline, else a
    new row pairing the arm with the declared arm seed by seed."""
    index = {key_of(r): i for i, r in enumerate(rows) if r["arm"] != r["baseline_arm"]}
    pre: list[dict[str, Any]] = []
    found: list[dict[str, MetricComparison]] = []
    for key in expand(declared, groups):
        if key in index:
            pre.append(rows[index[key]])
            found.append(comparisons[index[key]])
            continue
        case, optimizer, device, arm, against = key
        arms = groups[(case, optimizer, device)]
        row, metrics = _arm_row(arms[arm], arms[against])
        pre.append({"case": case, "optimizer": optimizer, "device": device, "arm": arm, "baseline_arm": against,
                    **row})
        found.append(metrics)
    return pre, found


def analyse(trials: list[Trial], analysis: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A train results file's `analysis` block and `summary` from its resolved trials.

    `analysis` holds the primary metric, α and, where the suite declared them, `primary_comparisons`;
    the block returned adds `preregistered`, the declared comparisons' rows, when there are any."""
    primary = str(analysis.get("primary_metric") or "time_to_target")
    alpha = float(analysis.get("alpha") or ALPHA)
    declared = declaration(analysis.get("primary_comparisons"))
    rows, pre = summarise_families(trials, primary, alpha, declared)
    block = {k: v for k, v in analysis.items() if k != "preregistered"}
    block.update(primary_metric=primary, alpha=alpha)
    if declared is not None:
        block["preregistered"] = pre
    return block, rows


def _arm_row(trials: list[Trial], base: list[Trial] | None) -> tuple[dict[str, Any], dict[str, MetricComparison]]:
    """Summary fields of one arm (`base`: the baseline's trials, None for the baseline row itself),
    and its comparisons with the baseline by metric (empty when there is nothing to compare)."""
    trials = sorted(trials, key=lambda t: t.get("seed", 0))
    counts = {s: sum(t.get("status") == s for t in trials) for s in STATUSES}
    ran = [t for t in trials if t.get("status") != "skipped"]
    target = (ran or trials or [{}])[0].get("target") or {}
    accepted = [r for t in ran for r in t.get("teleports") or [] if r.get("accepted", True)]
    row: dict[str, Any] = {
        "arm_kind": (trials[0].get("spec") or {}).get("arm_kind"),
        "n_seeds": len(ran),
        "seeds": [t.get("seed") for t in ran],
        "misses": sum(_finite(t.get("time_to_target_s")) is None for t in ran),
        "diverged": counts["diverged"],
        "errors": counts["error"],
        "skipped": counts["skipped"],
        "target_metric": target.get("metric"),
        "target_value": target.get("value"),
        "target_peeked": target.get("peeked"),
        "time_to_target_s": describe_censored(
            [_finite(t.get("time_to_target_s")) for t in ran], [_spent(t, "train_clock_s") for t in ran]
        ),
        "steps_to_target": describe_censored(
            [_steps(t.get("steps_to_target")) for t in ran], [_spent(t, "steps") for t in ran]
        ),
        "final_train_loss": describe([_finite(t.get("final_train_loss")) for t in ran]),
        "final_val_loss": describe([_finite(t.get("final_val_loss")) for t in ran]),
        "final_val_accuracy": describe([_finite(t.get("final_val_accuracy")) for t in ran]),
        "auc_log_train_loss": describe([auc_log_loss(t) if t.get("status") == "ok" else None for t in ran]),
        "teleport_overhead": describe([_finite(t.get("teleport_overhead")) for t in ran]),
        "teleports": sum(len(t.get("teleports") or []) for t in ran),
        "teleports_rejected": sum(len(t.get("teleports") or []) for t in ran) - len(accepted),
        "max_teleport_loss_change": _max_abs(relative_loss_change(r) for r in accepted),
        "max_teleport_held_out_loss_change": _max_abs(
            relative_loss_change(r, held_out=True) for r in accepted
        ),
        "final_test_loss": describe([_finite(t.get("final_test_loss")) for t in ran]),
        "final_test_accuracy": describe([_finite(t.get("final_test_accuracy")) for t in ran]),
        **dict.fromkeys(BLOCKS.values()),
        "verdict": None,
        "primary_metric": None,
        **dict.fromkeys(COMPARISON_FIELDS),
        **dict.fromkeys(ROW_FIELDS),
    }
    if base is None or not ran:
        return row, {}
    pairs = _pairs(base, ran)
    if not pairs:  # no seed that both arms ran (a declared arm whose trials were all skipped, say)
        return row, {}
    found = {metric: compare(pairs, metric) for metric in BLOCKS}
    for metric, comparison in found.items():
        row[BLOCKS[metric]] = comparison.block
    row["identical"] = identical_trajectories(pairs)
    row["noop_reason"] = noop_reason(ran) if row["identical"] else None
    return row, found


def _decide(rows: list[dict[str, Any]], comparisons: list[dict[str, MetricComparison]], primary: str,
            alpha: float) -> None:
    """Holm over each metric's family of rows, then the verdict words; the primary metric's result
    is copied to the top of its row with the methods, the correction and the seeds advice."""
    compared = [i for i, found in enumerate(comparisons) if found]
    for metric, key in BLOCKS.items():
        family = [i for i in compared if comparisons[i][metric].p_value is not None and not rows[i]["identical"]]
        adjusted = holm([comparisons[i][metric].p_value for i in family]) if family else np.array([])
        p_adj = dict(zip(family, (float(p) for p in adjusted), strict=True))
        words = COST_WORDS if metric in ("time_to_target", "steps_to_target") else LOSS_WORDS
        for i in compared:
            block, res = rows[i][key], comparisons[i][metric].result
            block["p_adjusted"] = p_adj.get(i)
            word = str(decide(rows[i]["identical"], res.positives[0] + res.negatives[0], p_adj.get(i),
                              res.positives[0], res.negatives[0], alpha))
            block["verdict"] = words.get(word, word)
            block["holm_m"] = len(family)
        if metric == primary:
            for i in compared:
                _primary_fields(rows[i], comparisons[i][metric], len(family), alpha)


def _primary_fields(row: dict[str, Any], comparison: MetricComparison, m: int, alpha: float) -> None:
    block = row[BLOCKS[comparison.metric]]
    sigma = seed_spread(comparison)
    row.update({field: block.get(field) for field in COMPARISON_FIELDS})
    row.update(
        primary_metric=comparison.metric,
        verdict=COST_WORDS.get(block["verdict"]) or _cost_word(block["verdict"]),
        test=TEST_NAME,
        interval=INTERVAL_NAME,
        correction=CORRECTION_NAME,
        holm_m=m,
        alpha=alpha,
        min_pairs=min_pairs_for(alpha),
        spread=json_number(sigma),
        seeds_needed=seeds_needed(sigma, alpha=alpha),
        seeds_needed_holm=seeds_needed(sigma, alpha=alpha / max(m, 1)),
    )


def _cost_word(word: str) -> str:
    """The row's verdict is always said as faster / slower, whatever the primary metric."""
    return {"lower": "faster", "higher": "slower"}.get(word, word)


def _pairs(base: list[Trial], arm: list[Trial]) -> list[Pair]:
    """Align baseline and arm trials by seed; seeds missing (or skipped) on either side are left out."""
    base_by_seed = {t.get("seed"): t for t in base if t.get("status") != "skipped"}
    return [(base_by_seed[t.get("seed")], t) for t in arm if t.get("seed") in base_by_seed]


def _spent(trial: Trial, field: str) -> float | None:
    """What a trial spent (its censoring point when it missed): the field, else its last evaluation's."""
    value = _finite(trial.get(field))
    if value is None:
        last = (trial.get("history") or [{}])[-1]
        value = _finite(last.get("train_clock_s" if field == "train_clock_s" else "step"))
    return value


def _steps(x: Any) -> float | None:
    return float(x) if isinstance(x, int) and not isinstance(x, bool) else None


def describe(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, mean, min and max over the seeds that have a value, plus the per-seed `values` (None
    where missing); `n` says how many have one."""
    present = [v for v in values if v is not None]
    out: dict[str, Any] = {"median": None, "mean": None, "min": None, "max": None}
    if present:
        arr = np.asarray(present, dtype=float)
        out = {
            k: json_number(float(f(arr)))
            for k, f in (("median", np.median), ("mean", np.mean), ("min", np.min), ("max", np.max))
        }
    out["n"] = len(present)
    out["values"] = [json_number(v) for v in values]
    return out


def describe_censored(values: Sequence[float | None], spent: Sequence[float | None]) -> dict[str, Any]:
    """A cost over seeds where a miss (None) is only known to exceed what it `spent`.

    The median lies in [median of lower bounds, median of upper bounds]: `median` is a number where
    those agree, else None, with `median_low`/`median_high` and `bound` ("≥" when most seeds missed).
    `mean`, `min` and `max` are numbers only where the misses cannot change them. `n` counts the
    seeds that reached the target, `censored` the rest; `censored_at` holds each miss's bound.
    """
    lows = np.array([v if v is not None else (s or 0.0) for v, s in zip(values, spent, strict=True)], dtype=float)
    highs = np.array([v if v is not None else math.inf for v in values], dtype=float)
    out: dict[str, Any] = {"median": None, "median_low": None, "median_high": None, "bound": None,
                           "mean": None, "min": None, "max": None}
    if len(values):
        m_lo, m_hi = float(np.median(lows)), float(np.median(highs))
        known = m_lo == m_hi
        out.update(
            median=json_number(m_lo) if known else None,
            median_low=json_number(m_lo),
            median_high=json_number(m_hi),
            bound=None if known else ("≥" if math.isinf(m_hi) else "between"),
            mean=json_number(float(highs.mean())) if np.isfinite(highs).all() else None,
            min=json_number(float(lows.min())) if lows.min() == highs.min() else None,
            max=json_number(float(lows.max())) if lows.max() == highs.max() else None,
        )
    out["n"] = sum(v is not None for v in values)
    out["censored"] = len(values) - out["n"]
    out["values"] = [json_number(v) for v in values]
    out["censored_at"] = [json_number(s) if v is None else None for v, s in zip(values, spent, strict=True)]
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

