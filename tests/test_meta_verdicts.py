"""The meta kind's paired verdicts: sign test over test seeds, Holm over the report, diverged runs worst."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from telebench.analysis.meta_verdicts import final_losses, verdicts
from telebench.render.meta import arm_label, verdict_section


def _arm(update: str, teleport: bool, finals: list[float | None], lr: float | None = None) -> dict[str, Any]:
    runs = [{"seed": 100 + i, "loss": [1e3, f]} for i, f in enumerate(finals)]
    return {"update": update, "teleport": teleport, "lr": lr, "test": runs}


def _case(name: str, tele: list[float | None], plain: list[float | None]) -> dict[str, Any]:
    n = len(tele)
    return {"name": name, "arms": [_arm("gd", False, [5.0] * n, lr=3e-4), _arm("lstm", False, plain),
                                    _arm("lstm", True, tele), _arm("learned_lr", True, [4.0] * (n - 1) + [6.0])]}


def test_sign_test_and_holm_over_the_report() -> None:
    rng = np.random.default_rng(0)
    plain = list(rng.uniform(1, 2, 12))
    tele = [p * (0.5 if i < 11 else 2.0) for i, p in enumerate(plain)]  # lower on 11 of 12 seeds
    rows = verdicts([_case("a", tele, plain), _case("b", plain, plain)], arm_label)
    assert [(r["case"], r["arm"], r["against"]) for r in rows] == [
        ("a", "LSTM(update, tele)", "LSTM(update)"), ("a", "LSTM(lr, tele)", "GD (lr 0.0003)"),
        ("b", "LSTM(update, tele)", "LSTM(update)"), ("b", "LSTM(lr, tele)", "GD (lr 0.0003)")]
    first = rows[0]
    assert (first["lower"], first["higher"], first["n_informative"]) == (11, 1, 12)
    assert first["p_value"] == pytest.approx(stats.binomtest(1, 12, 0.5).pvalue)
    raw = [r["p_value"] for r in rows]
    assert raw[2] is None  # identical finals: every seed a tie
    present = sorted(p for p in raw if p is not None)
    assert first["holm_m"] == 3
    assert first["p_adjusted"] == pytest.approx(min(1.0, 3 * present[0]))
    assert first["verdict"] == "lower" and first["median_ratio"] == pytest.approx(0.5)
    assert rows[1]["verdict"] == "lower"  # LSTM(lr, tele) 4 < GD's 5 on 11 of 12 seeds
    assert rows[2]["verdict"] == "too few seeds"  # no informative seed


def test_a_diverged_run_is_worse_than_any_finite_loss_and_both_diverged_is_a_tie() -> None:
    assert final_losses(_arm("lstm", True, [None, math.nan, 2.0])) == {100: math.inf, 101: math.inf, 102: 2.0}
    rows = verdicts([_case("c", [None] * 6 + [1.0], [1.0] * 6 + [None])], arm_label)
    row = rows[0]
    assert (row["lower"], row["higher"]) == (1, 6) and row["median_ratio"] == math.inf
    both = verdicts([_case("d", [None, 1.0], [None, 2.0])], arm_label)[0]
    assert (both["lower"], both["higher"], both["n_pairs"]) == (1, 0, 2)
    assert both["verdict"] == "too few seeds" and both["median_ratio"] == pytest.approx(0.5)


def test_the_report_section_states_the_family_and_every_row() -> None:
    text = "\n".join(verdict_section([_case("a", [1.0] * 8, [2.0] * 8)]))
    assert "## Verdicts" in text and "Holm over these 2 comparison(s)" in text
    assert "| a | LSTM(update, tele) | LSTM(update) | 8 | 8 / 0 | 0.5× | 0.0078 → 0.016 | lower |" in text
    assert verdict_section([{"name": "e", "arms": [_arm("gd", False, [1.0])]}]) == []
