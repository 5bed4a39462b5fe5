"""Verdicts for the meta kind: does a learned teleport beat the same optimizer without it?

Per case, two comparisons on the test seeds' final loss (lower is better; a diverged run is worse than
any finite loss): LSTM(update, tele) against LSTM(update), the paper's claim that learning where to
teleport beats learning the update alone, and LSTM(lr, tele) against GD. Every arm of a case is tested
on the same seeds (the same task draw and initial weights), so the comparison is paired by seed: an
exact two-sided sign test over the seeds whose order is known (a tie, both diverged included, is
dropped), Holm over every comparison of the report, α = 0.05. The word is said of the arm's final loss:
`lower` or `higher` at an adjusted p ≤ α; `too few seeds` with fewer informative seeds than the test
needs to reach α at all (6); else `no clear difference`. Beside it, the median over seeds of the ratio
arm ÷ reference of the final losses (∞ where only the arm diverged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from telebench.analysis.censored import sign_test_p
from telebench.analysis.verdicts import ALPHA, LOSS_WORDS, decide, holm

PAIRS = (("lstm", True, "lstm", False), ("learned_lr", True, "gd", False))  # (arm update, tele, reference update, tele)


def last_loss(run: dict[str, Any]) -> float:
    """A test run's last loss; inf if it diverged (its last loss null or non-finite, or no loss at all)."""
    losses = run.get("loss") or []
    last = losses[-1] if losses else None
    return float(last) if isinstance(last, int | float) and math.isfinite(last) else math.inf


def final_losses(arm: dict[str, Any]) -> dict[int, float]:
    """Each test seed's last loss (`last_loss`)."""
    return {int(run["seed"]): last_loss(run) for run in arm.get("test") or []}


def compare(case: str, arm: dict[str, Any], reference: dict[str, Any], labels: tuple[str, str]) -> dict[str, Any]:
    """One paired comparison of final test losses (p raw; Holm is applied over the report by `verdicts`)."""
    a, r = final_losses(arm), final_losses(reference)
    seeds = sorted(a.keys() & r.keys())
    lower = sum(1 for s in seeds if a[s] < r[s])
    higher = sum(1 for s in seeds if a[s] > r[s])
    ratios = [a[s] / r[s] for s in seeds if r[s] > 0 and not (math.isinf(a[s]) and math.isinf(r[s]))]
    p = float(sign_test_p(np.array([lower]), np.array([higher]))[0]) if lower + higher else None
    return {"case": case, "arm": labels[0], "against": labels[1], "n_pairs": len(seeds),
            "n_informative": lower + higher, "lower": lower, "higher": higher,
            "median_ratio": float(np.median(ratios)) if ratios else None, "p_value": p}


def verdicts(cases: Sequence[dict[str, Any]], labels: Any, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Every comparison of `PAIRS` present in `cases`, Holm-corrected together; `labels(arm)` names an arm."""
    rows: list[dict[str, Any]] = []
    for case in cases:
        arms = case.get("arms") or []
        for update, tele, ref_update, ref_tele in PAIRS:
            arm = next((x for x in arms if x.get("update") == update and bool(x.get("teleport")) == tele), None)
            ref = next((x for x in arms if x.get("update") == ref_update and bool(x.get("teleport")) == ref_tele), None)
            if arm is not None and ref is not None:
                rows.append(compare(str(case.get("name")), arm, ref, (labels(arm), labels(ref))))
    adjusted = holm([r["p_value"] for r in rows]) if rows else np.array([])
    m = sum(1 for r in rows if r["p_value"] is not None)
    for row, p_adj in zip(rows, adjusted, strict=True):
        row["p_adjusted"] = None if math.isnan(p_adj) else float(p_adj)
        row["holm_m"] = m
        word = str(decide(False, row["n_informative"], row["p_adjusted"], row["lower"], row["higher"], alpha))
        row["verdict"] = LOSS_WORDS.get(word, word)  # the train summary's rule, said of the final loss
    return rows
