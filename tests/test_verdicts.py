"""Error rates of the verdicts, by simulation, and the rules around them (Holm, identical, too few seeds).

Every simulation runs the code the reports use (`censored_log_ratios`, `analyse`, `holm`, `decide`) on
arrays of shape (draws, seeds), seeded. Monte Carlo margins are 3 binomial standard errors.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_results import make_trial

from telebench.analysis.censored import PairedArrays, analyse, censored_log_ratios
from telebench.analysis.summary import resolve_targets, summarise
from telebench.analysis.verdicts import (
    ALPHA,
    decide,
    holm,
    identical_trajectories,
    min_pairs_for,
    noop_reason,
    seeds_needed,
    sign_test_power,
)
from telebench.render import fmt

DRAWS = 2000
NS = (3, 4, 5, 6, 8, 10, 20)


def _margin(rate: float, draws: int = DRAWS) -> float:
    return 3.0 * math.sqrt(rate * (1.0 - rate) / draws)


def simulate(
    rng: np.random.Generator,
    n: int,
    *,
    effect: float = 1.0,
    sigma: float = 0.1,
    censor: float | None = None,
    tick: float | None = None,
    draws: int = DRAWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired costs of `draws` reports of n seeds: a seed's difficulty is shared by both arms, each arm
    adds log-normal noise (σ/√2 each, so the per-seed log-ratio has spread σ), the arm is `effect`×
    faster. `censor`: each trial's budget is that quantile of the baseline's cost, with 2 % clock
    jitter per trial, and a trial over budget is a miss that spent its budget. `tick`: costs are
    rounded up to evaluation points `tick` apart (ties)."""
    seed_level = rng.normal(0.0, 0.3, size=(draws, n))
    base = np.exp(seed_level + rng.normal(0.0, sigma / math.sqrt(2), size=(draws, n)))
    arm = np.exp(seed_level - math.log(effect) + rng.normal(0.0, sigma / math.sqrt(2), size=(draws, n)))
    if tick is not None:
        base, arm = np.ceil(base / tick) * tick, np.ceil(arm / tick) * tick
    if censor is None:
        return censored_log_ratios(base, np.zeros_like(base), arm, np.zeros_like(arm))
    budget = float(np.quantile(np.exp(rng.normal(0.0, 0.3, 100_000) + rng.normal(0.0, sigma, 100_000)), censor))
    cb = budget * np.exp(rng.normal(0.0, 0.02, size=(draws, n)))
    ca = budget * np.exp(rng.normal(0.0, 0.02, size=(draws, n)))
    return censored_log_ratios(np.where(base > cb, np.nan, base), cb, np.where(arm > ca, np.nan, arm), ca)


def verdicts(res: PairedArrays, p_adjusted: np.ndarray | None = None) -> np.ndarray:
    p = res.p_value if p_adjusted is None else p_adjusted
    return decide(np.zeros(res.n.shape, bool), res.positives + res.negatives, p, res.positives, res.negatives)


SCENARIOS = {"plain": {}, "censored": {"censor": 0.7}, "censored and tied": {"censor": 0.7, "tick": 0.25}}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_null_false_verdict_rate_is_at_most_alpha(scenario: str) -> None:
    rng = np.random.default_rng(20261122)
    for n in NS:
        res = analyse(*simulate(rng, n, **SCENARIOS[scenario]))
        words = verdicts(res, holm(res.p_value[:, None])[:, 0])  # Holm over the report's m = 1 comparison
        false = float(np.isin(words, ("faster", "slower")).mean())
        assert false <= ALPHA + _margin(ALPHA), (scenario, n, false)
        if n < min_pairs_for(ALPHA):
            assert set(words) <= {"too few seeds"}, (scenario, n)


def test_null_family_wise_rate_with_holm_over_ten_comparisons() -> None:
    rng = np.random.default_rng(7)
    m, n = 10, 10
    res = analyse(*(a.reshape(DRAWS * m, n) for a in simulate(rng, n, draws=DRAWS * m, censor=0.7)))
    adjusted = holm(res.p_value.reshape(DRAWS, m)).reshape(-1)
    false = np.isin(verdicts(res, adjusted), ("faster", "slower")).reshape(DRAWS, m).any(axis=1)
    assert false.mean() <= ALPHA + _margin(ALPHA)
    unadjusted = np.isin(verdicts(res), ("faster", "slower")).reshape(DRAWS, m).any(axis=1)
    assert unadjusted.mean() > 2 * ALPHA  # what the correction is for: without it, about 1 − (1 − 0.02)¹⁰


@pytest.mark.parametrize("scenario", [*SCENARIOS, "effect 1.3", "effect 1.3, censored"])
def test_intervals_cover_the_median_at_least_at_their_printed_level(scenario: str) -> None:
    rng = np.random.default_rng(11)
    kwargs: dict[str, Any] = dict(SCENARIOS.get(scenario, {}))
    if scenario.startswith("effect"):
        kwargs = {"effect": 1.3, **({"censor": 0.6} if "censored" in scenario else {})}
    truth = 0.0 if "effect" not in kwargs else _true_median(**kwargs)
    for n in NS:
        res = analyse(*simulate(rng, n, **kwargs))
        printed = np.array([float(fmt.level(x).rstrip("%")) / 100 if m else 0.0
                            for x, m in zip(res.ci_level, res.n, strict=True)])
        covered = (res.ci_low <= truth) & (truth <= res.ci_high)
        for m in np.unique(res.n):  # per number of seeds used: each has its own printed level
            group = res.n == m
            if group.sum() >= 200:
                level = printed[group][0]
                assert covered[group].mean() >= level - _margin(level, int(group.sum())), (scenario, n, m)


def _true_median(**kwargs: Any) -> float:
    """The population median of the per-seed log-ratio among seeds where some arm reached the target
    (the same draws with and without budgets: the random streams agree up to the budgets)."""
    exact = simulate(np.random.default_rng(99), 1, draws=400_000, **{**kwargs, "censor": None})[0]
    if kwargs.get("censor") is None:
        return float(np.median(exact))
    kept = simulate(np.random.default_rng(99), 1, draws=400_000, **kwargs)[3]
    return float(np.median(exact[kept]))


def test_power_against_a_one_and_a_half_times_speedup() -> None:
    rng = np.random.default_rng(3)
    n = 10
    res = analyse(*simulate(rng, n, effect=1.5, sigma=0.1))
    power_alone = float((verdicts(res, holm(res.p_value[:, None])[:, 0]) == "faster").mean())
    assert power_alone >= 0.8
    # among m = 10 comparisons (this one and 9 without an effect), Holm asks p ≤ 0.005 of the smallest
    nulls = analyse(*(a.reshape(DRAWS * 9, n) for a in simulate(rng, n, draws=DRAWS * 9)))
    family = np.concatenate([res.p_value[:, None], nulls.p_value.reshape(DRAWS, 9)], axis=1)
    power_ten = float((verdicts(res, holm(family)[:, 0]) == "faster").mean())
    assert power_ten >= 0.8
    print(f"power, 1.5x at sigma 0.1 with {n} seeds: {power_alone:.4f} (m = 1), {power_ten:.4f} (m = 10)")


def test_seeds_advice_reaches_its_power_in_simulation() -> None:
    sigma = 0.2
    n = seeds_needed(sigma)
    assert n is not None and n > seeds_needed(0.1)  # type: ignore[operator]
    res = analyse(*simulate(np.random.default_rng(5), n, effect=1.1, sigma=sigma))
    power = float((verdicts(res) == "faster").mean())
    assert power >= 0.8 - _margin(0.8)
    assert float(sign_test_power(np.array([n]), float(np.mean(res.positives / res.n)))[0]) >= 0.75
    assert seeds_needed(0.0) == min_pairs_for(ALPHA) == 6 and seeds_needed(None) is None
    assert seeds_needed(sigma, alpha=ALPHA / 10) > n  # type: ignore[operator]


def test_too_few_seeds_below_six_informative_pairs() -> None:
    assert min_pairs_for(0.05) == 6 and min_pairs_for(0.01) == 8 and min_pairs_for(0.0625) == 5
    for n in range(1, 6):  # every seed on the arm's side, the strongest outcome there is
        res = analyse(np.ones((1, n)), np.ones((1, n)), np.ones((1, n)), np.ones((1, n), bool))
        assert res.p_value[0] == pytest.approx(2 * 0.5**n if n > 1 else 1.0)
        assert verdicts(res)[0] == "too few seeds"
    res = analyse(np.ones((1, 6)), np.ones((1, 6)), np.ones((1, 6)), np.ones((1, 6), bool))
    assert verdicts(res)[0] == "faster"


def test_censoring_gives_a_bound_and_never_an_infinite_median() -> None:
    target = {"metric": "train_loss", "kind": "absolute", "value": 0.3, "slack": 0.0}
    trials = []
    for seed in range(8):  # the baseline misses 0.3 in 5 of 8 seeds; the teleport arm always reaches it
        trials.append(make_trial(arm="baseline", seed=seed, rate=0.004 if seed < 5 else 0.02, target=target))
        trials.append(make_trial(arm="teleport", seed=seed, rate=0.03, target=target))
    rows = summarise(resolve_targets(trials))
    base, tele = rows
    assert base["misses"] == 5 and base["time_to_target_s"]["median"] is None
    assert base["time_to_target_s"]["bound"] == "≥" and base["time_to_target_s"]["median_low"] == 2.0
    speed = tele["speedup_time"]
    assert speed["median"] is None and speed["bound"] == "≥" and 1.0 < speed["median_low"] < math.inf
    assert tele["bound"] == "≥" and tele["median"] is None and speed["censored"] == 5
    assert fmt.median_ratio(speed).startswith("≥ ") and "∞" not in fmt.median_ratio(speed)
    assert tele["verdict"] == "faster"  # every seed's sign is known, 8 of 8 for the arm
    for row in rows:  # no median anywhere in the summary is infinite
        text = json.dumps(row, allow_nan=False)
        for block in (v for v in row.values() if isinstance(v, dict)):
            assert block.get("median") not in ("inf", "-inf"), text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12), st.lists(st.floats(0.0, 1.0), max_size=12))
def test_holm_adding_comparisons_only_raises_adjusted_p(p: list[float], extra: list[float]) -> None:
    before = holm(np.array(p))
    after = holm(np.array(p + extra))[: len(p)]
    assert np.all(after >= before - 1e-12)
    assert np.all(before >= np.array(p) - 1e-12) and np.all(before <= 1.0)


def test_holm_values_missing_entries_and_rows() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.01, None, 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    rows = np.random.default_rng(0).uniform(size=(5, 7))
    assert np.allclose(holm(rows), np.stack([holm(r) for r in rows]))


def _pair(**changes: Any) -> list[tuple[dict, dict]]:
    pairs = []
    for seed in range(3):
        base = make_trial(arm="baseline", optimizer="sgd", seed=seed)
        arm = make_trial(arm="reset-only", optimizer="sgd", seed=seed, noise_of="baseline", **changes)
        pairs.append((base, arm))
    return pairs


def test_identical_trajectories_and_why() -> None:
    pairs = _pair()
    assert identical_trajectories(pairs)
    assert noop_reason([a for _, a in pairs]) == (
        "reset-only with an optimizer that has no state (sgd without momentum): a reset changes nothing")
    nudged = _pair()
    row = nudged[1][1]["history"][7]
    row["val_loss"] = math.nextafter(row["val_loss"], math.inf)  # one ulp on one point of one seed
    assert not identical_trajectories(nudged)
    assert not identical_trajectories(_pair(noise=0.001))
    crashed = _pair()
    crashed[0][1]["status"] = "diverged"
    assert not identical_trajectories(crashed) and not identical_trajectories([])
    adam = [{"spec": {"arm_kind": "reset-only", "optimizer": {"name": "adam", "kwargs": []},
                      "teleport": {"schedule": {"kind": "at_steps", "steps": [0]}}}}]
    assert "before adam has any state" in noop_reason(adam)
    rejected = [{"spec": {"arm_kind": "teleport"}, "teleports": [{"accepted": False}, {"accepted": False}]}]
    assert noop_reason(rejected) == "every one of its 2 teleports was rejected and rolled back"


def test_identical_arm_is_out_of_the_holm_family() -> None:
    trials = []
    for seed in range(8):
        trials.append(make_trial(arm="baseline", optimizer="sgd", seed=seed, rate=0.02))
        trials.append(make_trial(arm="reset-only", optimizer="sgd", seed=seed, rate=0.02, noise_of="baseline"))
        trials.append(make_trial(arm="teleport", optimizer="sgd", seed=seed, rate=0.04))
    for i, t in enumerate(trials):  # the no-op's clock differs by noise: it must not earn a verdict on it
        t["history"] = [{**h, "train_clock_s": h["train_clock_s"] * (1.0 + 1e-3 * (i % 3))} for h in t["history"]]
    rows = {r["arm"]: r for r in summarise(resolve_targets(trials))}
    assert rows["reset-only"]["verdict"] == "identical" and rows["reset-only"]["p_adjusted"] is None
    assert rows["teleport"]["holm_m"] == 1 and rows["teleport"]["verdict"] == "faster"


def test_printed_levels_never_round_up() -> None:
    assert [fmt.level(x) for x in (0.9375, 0.875, 0.96875, 0.75)] == ["93.75%", "87.5%", "96.87%", "75%"]
    assert fmt.interval_name({"ci_level": 0.75, "ci_kind": "range"}) == "range"
    assert fmt.interval_name({"ci_level": 0.9375, "ci_kind": "interval"}) == "93.75% CI"
