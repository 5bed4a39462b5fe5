"""Verdict words with a known error rate: Holm correction, the seeds a test needs, and no-op arms.

- `faster` / `slower`: the primary metric's sign test is significant at α after **Holm's step-down
  correction** over every comparison of the report that can get one of these words. Holm controls
  the chance of any false verdict in the report at α under any dependence between comparisons (arms
  of one group share their baseline seeds), and is never less powerful than Bonferroni.
- `identical`: the arm's trajectories equal the baseline's bit for bit on every paired seed, so the
  control did nothing and its timings differ by clock noise only. It takes no part in Holm's family.
- `too few seeds`: fewer informative seeds than any outcome of the test needs to reach α
  (`min_pairs_for`); a two-sided sign test needs 6 at α = 0.05, since 2·½⁵ = 0.0625.
- otherwise `no clear difference`.

Seeds advice (`seeds_needed`): with σ the spread of the per-seed log-effects, a true 10 % effect
makes a seed favour the arm with probability Φ(log 1.1 / σ); the advice is the smallest number of
seeds whose exact sign test then reaches α with 80 % power (normal spread, no ties: a planning
figure, not a guarantee).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from telebench.training.optimizer_state import keeps_state

ALPHA = 0.05
EFFECT = 1.1  # the effect the seeds advice is for: 10 %
POWER = 0.8
CORRECTION_NAME = "Holm"
VERDICTS = ("faster", "slower", "no clear difference", "identical", "too few seeds")
LOSS_WORDS = {"faster": "lower", "slower": "higher"}  # the same decision, said of a loss

Trial = dict[str, Any]


def holm(p_values: np.ndarray | Sequence[float | None]) -> np.ndarray:
    """Holm-adjusted p-values along the last axis; NaN (or None) entries are not in the family.

    adjusted p₍ᵢ₎ = max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎), with p sorted ascending and m the number
    of p-values present. Reject where adjusted p ≤ α: family-wise error ≤ α under any dependence.
    """
    raw = np.array([np.nan if v is None else v for v in p_values], dtype=float) if isinstance(
        p_values, (list, tuple)) else np.asarray(p_values, dtype=float)
    p = np.atleast_2d(raw)
    missing = np.isnan(p)
    m = (~missing).sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(missing, np.inf, p), axis=-1, kind="stable")
    ranked = np.take_along_axis(np.where(missing, np.inf, p), order, axis=-1)
    factor = m - np.arange(p.shape[-1])  # positive for the present entries, which sort first
    with np.errstate(invalid="ignore"):
        scaled = np.where(factor > 0, ranked * np.maximum(factor, 1), -np.inf)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled, axis=-1))
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    adjusted = np.where(missing, np.nan, adjusted)
    return adjusted.reshape(raw.shape)


def min_pairs_for(alpha: float = ALPHA) -> int:
    """The fewest informative seeds with which an exact two-sided sign test can reach `alpha`."""
    n = 1
    while 2.0 * 0.5**n > alpha:
        n += 1
    return n


def sign_test_power(n: np.ndarray, q: float, alpha: float = ALPHA) -> np.ndarray:
    """Power of the exact two-sided sign test with n seeds when each favours the arm with probability q."""
    # scipy.special's binomial CDFs, not scipy.stats (0.6 s to import); imported here, not at
    # import: the suite planner imports this module.
    from scipy.special import bdtr, bdtrc

    n = np.asarray(n, dtype=int)
    # c: the largest count with P(Binom(n, ½) ≤ c) ≤ α/2 (−1 where none), by bisection: cdf(lo) ≤ α/2 < cdf(hi).
    lo, hi = np.full(n.shape, -1), n.copy()
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        below = bdtr(np.maximum(mid, 0), n, 0.5) <= alpha / 2 + 1e-12
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    c = lo
    lower = np.where(c >= 0, bdtr(np.maximum(c, 0), n, q), 0.0)
    upper = np.where(c >= 0, bdtrc(np.maximum(n - c - 1, 0), n, q), 0.0)  # P(B > n − c − 1)
    return np.asarray(lower + upper, dtype=float)


def seeds_needed(
    sigma: float | None,
    effect: float = EFFECT,
    alpha: float = ALPHA,
    power: float = POWER,
    max_n: int = 100_000,
) -> int | None:
    """Seeds a comparison with per-seed log-effect spread `sigma` needs to detect `effect` (1.1 = 10 %)
    with the exact sign test at level `alpha` and the given power; None when σ is unknown or no n up
    to `max_n` suffices. σ = 0 needs only `min_pairs_for(alpha)`."""
    if sigma is None or not math.isfinite(sigma) or sigma < 0 or effect <= 1.0:
        return None
    if sigma == 0:
        return min_pairs_for(alpha)
    q = 0.5 * math.erfc(-math.log(effect) / (sigma * math.sqrt(2.0)))  # Φ(log(effect) / σ)
    start = min_pairs_for(alpha)
    while start <= max_n:  # growing chunks: most answers are small, and the search stays fast
        ns = np.arange(start, min(max_n, 4 * start + 256) + 1)
        ok = np.nonzero(sign_test_power(ns, q, alpha) >= power)[0]
        if ok.size:
            return int(ns[ok[0]])
        start = int(ns[-1]) + 1
    return None


def decide(
    identical: np.ndarray | bool,
    informative: np.ndarray | int,
    p_adjusted: np.ndarray | float | None,
    positives: np.ndarray | int,
    negatives: np.ndarray | int,
    alpha: float = ALPHA,
) -> np.ndarray:
    """Verdict words, elementwise (see the module docstring for the rule)."""
    p = np.asarray(np.nan if p_adjusted is None else p_adjusted, dtype=float)
    informative = np.asarray(informative)
    significant = ~np.isnan(p) & (p <= alpha)
    better = np.asarray(positives) > np.asarray(negatives)
    return np.select(
        [np.asarray(identical, dtype=bool), informative < min_pairs_for(alpha), significant & better, significant],
        ["identical", "too few seeds", "faster", "slower"],
        "no clear difference",
    )


# ---- arms that did nothing ---------------------------------------------------------------------------

FINALS = ("final_train_loss", "final_val_loss", "final_val_accuracy", "final_test_loss", "final_test_accuracy")
CURVES = ("step", "train_loss", "val_loss", "val_accuracy")


def identical_trajectories(pairs: Sequence[tuple[Trial, Trial]]) -> bool:
    """True when every (baseline, arm) pair of one seed has the same status, the same evaluations
    (step, train_loss, val_loss, val_accuracy at every history point) and the same final values, and
    at least one pair has a history: bit-for-bit equality, NaN equal to NaN."""
    if not pairs or not any(base.get("history") for base, _ in pairs):
        return False
    for base, arm in pairs:
        if base.get("status") != arm.get("status"):
            return False
        hb, ha = base.get("history") or [], arm.get("history") or []
        if len(hb) != len(ha):
            return False
        if not all(_same(rb.get(k), ra.get(k)) for rb, ra in zip(hb, ha, strict=True) for k in CURVES):
            return False
        if not all(_same(base.get(k), arm.get(k)) for k in FINALS):
            return False
    return True


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return bool(x == y)


def noop_reason(arm_trials: Sequence[Trial]) -> str:
    """Why an identical arm did nothing, from its spec (arm kind, optimizer, schedule) and teleports."""
    spec = (arm_trials[0].get("spec") or {}) if arm_trials else {}
    kind = spec.get("arm_kind") or (arm_trials[0].get("arm_kind") if arm_trials else None)
    optimizer = spec.get("optimizer") or {}
    name = str(optimizer.get("name") or (arm_trials[0].get("optimizer") if arm_trials else "") or "")
    records = [r for t in arm_trials for r in t.get("teleports") or []]
    if kind == "reset-only":
        if _stateless(name, optimizer.get("kwargs")):
            return f"reset-only with an optimizer that has no state ({name} without momentum): a reset changes nothing"
        if _only_at_step_zero((spec.get("teleport") or {}).get("schedule") or {}):
            return f"reset-only at step 0, before {name or 'the optimizer'} has any state: a reset changes nothing"
        return f"reset-only: resetting the {name or 'optimizer'} state left every evaluation unchanged"
    if kind in ("teleport", "random-teleport"):
        if not records:
            return f"{kind} arm with no teleport inside its budget (check its schedule)"
        if not any(r.get("accepted", True) for r in records):
            return f"every one of its {len(records)} teleports was rejected and rolled back"
        moved = [r.get("relative_weight_change") for r in records if r.get("accepted", True)]
        if moved and all(isinstance(m, (int, float)) and m == 0 for m in moved):
            return "its accepted teleports did not move the weights"
        return "its teleports changed nothing that the evaluations can see"
    if kind == "lr-bump":
        if not records:
            return "lr-bump arm with no bump inside its budget (check its schedule)"
        if all(r.get("lr_factor") == 1 for r in records):
            return "every lr factor was 1 (its measured teleports were rejected), so it only restarted the optimizer"
        return "its lr bumps changed nothing that the evaluations can see"
    return "its trajectories equal the baseline's bit for bit"


def _stateless(name: str, kwargs: Any) -> bool:
    """Plain SGD (no momentum) keeps no optimizer state (the training layer's rule, torch-free)."""
    return bool(name) and not keeps_state(name, dict(kwargs or []))


def _only_at_step_zero(schedule: dict[str, Any]) -> bool:
    kind = schedule.get("kind")
    if kind == "at_steps":
        steps = list(schedule.get("steps") or [])
        return bool(steps) and all(s == 0 for s in steps)
    if kind == "at_epochs":
        epochs = list(schedule.get("epochs") or [])
        return bool(epochs) and all(e == 0 for e in epochs)
    return False
