"""Order-statistic intervals and paired speedups: coverage of the median, censoring, tests and verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telebench.analysis.censored import choose_k, half_binomial_cdf, interval_level, sign_test_p
from telebench.analysis.stats import json_number, paired_difference, paired_speedup
from telebench.analysis.verdicts import sign_test_power


def test_order_statistic_interval_contains_median_and_is_deterministic() -> None:
    # replaces the percentile-bootstrap test: the interval is now exact order statistics, nothing random
    values = np.random.default_rng(1).lognormal(size=9)
    out = paired_difference(np.zeros(9).tolist(), values.tolist())
    assert out["ci_low"] <= float(np.median(values)) <= out["ci_high"]
    assert out["ci_low"] < out["ci_high"]
    assert paired_difference(np.zeros(9).tolist(), values.tolist()) == out
    k = choose_k(9)  # the largest k whose level is >= 95 %: k = 2, level 1 - 2*10/512
    assert (k, interval_level(9, k)) == (2, pytest.approx(1 - 2 * 10 / 512))
    assert out["ci_low"] == pytest.approx(np.sort(values)[1]) and out["ci_high"] == pytest.approx(np.sort(values)[-2])


def test_interval_levels_are_the_ones_reached() -> None:
    assert interval_level(5, 1) == pytest.approx(0.9375) and interval_level(4, 1) == pytest.approx(0.875)
    assert interval_level(3, 1) == pytest.approx(0.75) and interval_level(1, 1) == 0.0
    assert [choose_k(n) for n in (3, 5, 6, 8, 9, 10, 20)] == [1, 1, 1, 1, 2, 2, 6]
    assert all(interval_level(n, choose_k(n)) >= 0.95 for n in range(6, 40))


def test_degenerate_and_empty_comparisons() -> None:
    same = paired_speedup([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert (same.median, same.ci_low, same.ci_high) == (2.0, 2.0, 2.0)
    empty = paired_speedup([None], [None])
    assert empty.n_pairs == 0 and empty.both_missed == 1 and empty.median is None and empty.ci_low is None


def test_censored_seeds_give_bounds_not_infinities() -> None:
    # the arm missed twice (budget 5 s): its log-speedup is only bounded above, by log(base / 5)
    res = paired_speedup([1.0, 2.0, 3.0], [1.0, None, None], arm_spent=[5.0, 5.0, 5.0])
    assert res.bound == "≤" and res.median is None and res.median_high == pytest.approx(3.0 / 5.0)
    assert res.ci_low == 0.0 and res.ci_high == pytest.approx(1.0)  # the range: 3 seeds reach 75 %
    assert res.n_informative == 2  # one tie (1.0 vs 1.0) is dropped, the two misses are known losses


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e3), min_size=1, max_size=12))
def test_interval_brackets_the_median(values: list[float]) -> None:
    out = paired_difference([0.0] * len(values), values)
    assert out["ci_low"] <= float(np.median(values)) <= out["ci_high"]
    assert out["median"] == pytest.approx(float(np.median(values)))


def test_clear_speedup_is_faster_with_small_p() -> None:
    rng = np.random.default_rng(0)
    base = list(rng.uniform(2.0, 3.0, size=8))
    arm = [b / 1.5 * float(rng.uniform(0.95, 1.05)) for b in base]
    result = paired_speedup(base, arm)
    assert result.n_pairs == 8 and result.both_missed == 0
    assert result.p_value is not None and result.p_value < 0.05
    assert result.ci_low is not None and result.ci_low > 1.0
    assert result.ci_low <= result.median <= result.ci_high
    assert result.median == pytest.approx(1.5, rel=0.05)
    assert result.verdict == "faster"


def test_clear_slowdown_is_slower() -> None:
    base = [1.0, 1.1, 0.9, 1.2, 1.0, 0.95]
    arm = [b * 2.0 for b in base]
    result = paired_speedup(base, arm)
    assert result.median == pytest.approx(0.5)
    assert result.p_value is not None and result.p_value < 0.05
    assert result.verdict == "slower"


def test_no_shift_is_no_clear_difference() -> None:
    base = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    arm = [0.9, 2.2, 2.9, 4.3, 4.8, 6.3]  # ratios scattered on both sides of 1
    result = paired_speedup(base, arm)
    assert result.p_value is not None and result.p_value > 0.05
    assert result.ci_low < 1.0 < result.ci_high
    assert result.verdict == "no clear difference"


def test_misses_are_censored_and_both_missed_are_counted() -> None:
    # was: misses become ratios 0 and ∞ and the median is 2.0; now a miss is censored at its budget (4 s)
    result = paired_speedup([2.0, None, 1.0, None], [1.0, 3.0, None, None], [4.0] * 4, [4.0] * 4)
    assert result.n_pairs == 3 and result.both_missed == 1
    # seed 0: 2×; seed 1 (baseline missed): ≥ 4/3; seed 2 (arm missed): ≤ 1/4; so the median is in [4/3, 2]
    assert result.median is None and result.bound == "between"
    assert (result.median_low, result.median_high) == (pytest.approx(4.0 / 3.0), pytest.approx(2.0))
    assert result.ci_low == 0.0 and result.ci_high == math.inf  # the range of bounds, 3 seeds
    assert result.n_informative == 3 and result.p_value == pytest.approx(1.0)


def test_two_pairs_are_too_few_for_a_verdict() -> None:
    result = paired_speedup([2.0, 2.2], [1.0, 1.0])
    assert result.ci_low is not None and result.ci_low > 1.0
    assert result.verdict == "too few seeds"  # was "no clear difference"


def test_arm_missing_everywhere_is_bounded_and_needs_more_seeds() -> None:
    # was: ratios (0, 0, 0) and "slower" at 3 seeds; now each seed is a known loss, bounded, and 3 are too few
    result = paired_speedup([1.0, 1.2, 0.8], [None, None, None], arm_spent=[2.0, 2.0, 2.0])
    assert result.median is None and result.bound == "≤" and result.median_high == pytest.approx(0.5)
    assert result.n_informative == 3 and result.verdict == "too few seeds"
    many = paired_speedup([1.0, 1.2, 0.8, 0.9, 1.1, 1.0], [None] * 6, arm_spent=[2.0] * 6)
    assert many.verdict == "slower" and many.p_value == pytest.approx(2 / 64)


def test_one_pair_or_ties_give_no_verdict() -> None:
    single = paired_speedup([2.0], [1.0])
    assert single.p_value == 1.0 and single.verdict == "too few seeds"  # was p None, "no clear difference"
    tied = paired_speedup([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert tied.p_value is None and tied.median == 1.0 and tied.verdict == "too few seeds"
    empty = paired_speedup([None], [None])
    assert empty.n_pairs == 0 and empty.median is None and empty.verdict == "too few seeds"


def test_sign_test_uses_known_signs_of_censored_seeds() -> None:
    # replaces the Wilcoxon test with infinite log-ratios: baseline misses (budget 10) are known wins
    base = [None, None, 2.0, 3.0, 1.5, 4.0]
    result = paired_speedup(base, [1.0] * 6, base_spent=[10.0] * 6, arm_spent=[10.0] * 6)
    assert result.n_informative == 6 and result.p_value == pytest.approx(2 / 64)
    assert result.verdict == "faster"
    assert sign_test_p(np.array([0]), np.array([0]))[0] != sign_test_p(np.array([0]), np.array([0]))[0]  # NaN


def test_unequal_lengths_are_rejected() -> None:
    with pytest.raises(ValueError):
        paired_speedup([1.0, 2.0], [1.0])


def test_to_dict_is_json_safe() -> None:
    # the baseline's miss now needs its budget (3 s) to say anything; then the median is known
    d = paired_speedup([None, 1.0, 2.0], [1.0, 1.0, 1.0], base_spent=[3.0, 3.0, 3.0]).to_dict()
    assert d["ci_high"] == "inf" and d["median"] == 2.0 and d["ci_level"] == 0.75 and d["ci_kind"] == "range"
    assert json_number(math.nan) is None and json_number(-math.inf) == "-inf" and json_number(3) == 3
    json.dumps(d, allow_nan=False)


def test_interval_ends_are_data_points() -> None:
    # replaces the bootstrap rounding test: order-statistic ends are seeds' own values
    values = [0.8270352122769017, 0.95, 1.02, 1.1, 0.99]
    res = paired_speedup(values, [1.0] * 5)
    assert (res.ci_low, res.ci_high) == (min(values), max(values)) and res.ci_level == 0.9375


def test_censored_interval_keeps_its_infinite_end() -> None:
    # replaces "bootstrap keeps real infinities": three baseline misses leave the upper end unbounded
    res = paired_speedup([1.0, 1.2, None, None, None], [1.0] * 5, base_spent=[5.0] * 5)
    assert res.ci_high == math.inf and res.ci_low == 1.0
    assert res.median is None and res.bound == "≥" and res.median_low == pytest.approx(5.0)  # "≥ 5×", not ∞


def test_paired_difference_finds_a_consistent_drop_and_skips_missing_seeds() -> None:
    base = [0.50, 0.52, 0.49, 0.51, 0.53, 0.50]
    arm = [0.45, 0.47, 0.44, 0.46, 0.48, None]
    out = paired_difference(base, arm)
    assert out["n_pairs"] == 5 and out["missing"] == 1
    assert out["median"] == pytest.approx(-0.05)
    assert out["ci_high"] < 0 and out["verdict"] == "too few seeds"  # was "lower" at 5 seeds
    six = paired_difference([*base, 0.5], [*arm[:5], 0.45, 0.44])
    assert six["n_pairs"] == 7 and six["verdict"] == "lower" and six["p_value"] == pytest.approx(2 / 128)


def test_paired_difference_without_a_shift_is_no_clear_difference() -> None:
    out = paired_difference([0.5, 0.6, 0.55, 0.52], [0.51, 0.59, 0.56, 0.51])
    assert out["verdict"] == "too few seeds"  # was "no clear difference" at 4 seeds
    more = paired_difference([0.5, 0.6, 0.55, 0.52, 0.5, 0.6], [0.51, 0.59, 0.56, 0.51, 0.52, 0.58])
    assert more["verdict"] == "no clear difference"


def test_the_sign_test_arithmetic_is_the_binomial_distribution() -> None:
    """The exact half-binomial CDF and the seeds advice's power, written without scipy.stats (slow to
    import), agree with scipy.stats' binomial distribution."""
    from scipy import stats as sps

    for n in (1, 2, 7, 40, 151):
        ks = np.arange(-1, n + 1)
        assert [half_binomial_cdf(int(k), n) for k in ks] == pytest.approx(sps.binom.cdf(ks, n, 0.5), rel=1e-13)
    assert half_binomial_cdf(3, 6) == 42 / 64  # 1 + 6 + 15 + 20 over 2^6, exactly
    pos, neg = np.array([9, 1, 0, 4]), np.array([1, 9, 0, 4])
    assert np.allclose(sign_test_p(pos, neg)[[0, 1, 3]], [2 * sps.binom.cdf(1, 10, 0.5)] * 2 + [1.0], rtol=1e-13)
    assert math.isnan(sign_test_p(pos, neg)[2])
    ns = np.arange(1, 400)
    for q in (0.5, 0.6, 0.9):
        for alpha in (0.05, 0.05 / 6):
            c = sps.binom.ppf(alpha / 2, ns, 0.5)
            c = np.where(sps.binom.cdf(c, ns, 0.5) > alpha / 2 + 1e-12, c - 1, c)
            want = np.where(c >= 0, sps.binom.cdf(c, ns, q) + sps.binom.sf(ns - c - 1, ns, q), 0.0)
            assert np.allclose(sign_test_power(ns, q, alpha), want, rtol=1e-10, atol=1e-12)
