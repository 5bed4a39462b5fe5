"""Bootstrap intervals and paired speedups: coverage of the median, infinities, tests and verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telebench.analysis.stats import bootstrap_ci, json_number, paired_speedup, wilcoxon_log_ratio


def test_bootstrap_ci_contains_median_and_is_seeded() -> None:
    values = np.random.default_rng(1).lognormal(size=9)
    low, high = bootstrap_ci(values)
    assert low <= float(np.median(values)) <= high
    assert low < high
    assert bootstrap_ci(values, seed=0) == (low, high)


def test_bootstrap_ci_degenerate_and_empty() -> None:
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_ci([3.5]) == (3.5, 3.5)
    low, high = bootstrap_ci([])
    assert math.isnan(low) and math.isnan(high)
    assert bootstrap_ci([1.0, math.nan, 1.0]) == (1.0, 1.0)  # NaN ignored


def test_bootstrap_ci_with_infinities() -> None:
    low, high = bootstrap_ci([1.0, 2.0, math.inf])
    assert low == 1.0 and high == math.inf
    assert bootstrap_ci([math.inf, math.inf]) == (math.inf, math.inf)
    low, high = bootstrap_ci([0.5, 0.6, 0.7, 0.8, math.inf, math.inf])
    assert 0.5 <= low < 0.8 and high == math.inf
    low, high = bootstrap_ci([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, math.inf])  # one ∞ stays in the tail
    assert low >= 0.5 and high == pytest.approx(1.1)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e3), min_size=1, max_size=12))
def test_bootstrap_ci_brackets_the_median(values: list[float]) -> None:
    low, high = bootstrap_ci(values, n_resamples=200)
    assert low <= float(np.median(values)) <= high


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


def test_misses_become_zero_and_infinity_and_both_missed_are_counted() -> None:
    result = paired_speedup([2.0, None, 1.0, None], [1.0, 3.0, None, None])
    assert result.ratios == (2.0, math.inf, 0.0)
    assert result.n_pairs == 3 and result.both_missed == 1
    assert result.median == 2.0


def test_two_pairs_are_too_few_for_a_verdict() -> None:
    result = paired_speedup([2.0, 2.2], [1.0, 1.0])
    assert result.ci_low is not None and result.ci_low > 1.0
    assert result.verdict == "no clear difference"


def test_arm_missing_everywhere_is_slower() -> None:
    result = paired_speedup([1.0, 1.2, 0.8], [None, None, None])
    assert result.ratios == (0.0, 0.0, 0.0)
    assert result.verdict == "slower"


def test_one_pair_or_ties_give_no_test_and_no_verdict() -> None:
    single = paired_speedup([2.0], [1.0])
    assert single.p_value is None and single.verdict == "no clear difference"
    tied = paired_speedup([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert tied.p_value is None and tied.median == 1.0 and tied.verdict == "no clear difference"
    empty = paired_speedup([None], [None])
    assert empty.n_pairs == 0 and empty.median is None and empty.verdict == "no clear difference"


def test_wilcoxon_handles_infinite_log_ratios() -> None:
    p = wilcoxon_log_ratio([math.inf, math.inf, 2.0, 3.0, 1.5, 4.0])
    assert p is not None and 0.0 < p < 0.05
    assert wilcoxon_log_ratio([1.0, 1.0]) is None


def test_unequal_lengths_are_rejected() -> None:
    with pytest.raises(ValueError):
        paired_speedup([1.0, 2.0], [1.0])


def test_to_dict_is_json_safe() -> None:
    d = paired_speedup([None, 1.0, 2.0], [1.0, 1.0, 1.0]).to_dict()
    assert d["ci_high"] == "inf" and d["median"] == 2.0
    assert json_number(math.nan) is None and json_number(-math.inf) == "-inf" and json_number(3) == 3


def test_bootstrap_interval_ends_at_the_data_are_not_turned_into_infinities() -> None:
    # Rounding in the percentile can put an end a hair outside the finite range; that is not a sentinel.
    values = [0.8270352122769017, 0.95, 1.02, 1.1, 0.99]
    low, high = bootstrap_ci(values)
    assert math.isfinite(low) and math.isfinite(high)
    assert min(values) <= low <= high <= max(values)


def test_bootstrap_keeps_real_infinities() -> None:
    low, high = bootstrap_ci([1.0, 1.2, math.inf, math.inf, math.inf])
    assert high == math.inf and math.isfinite(low)


def test_paired_difference_finds_a_consistent_drop_and_skips_missing_seeds() -> None:
    from telebench.analysis.stats import paired_difference

    base = [0.50, 0.52, 0.49, 0.51, 0.53, 0.50]
    arm = [0.45, 0.47, 0.44, 0.46, 0.48, None]
    out = paired_difference(base, arm)
    assert out["n_pairs"] == 5 and out["missing"] == 1
    assert out["median"] == pytest.approx(-0.05)
    assert out["ci_high"] < 0 and out["verdict"] == "lower"


def test_paired_difference_without_a_shift_is_no_clear_difference() -> None:
    from telebench.analysis.stats import paired_difference

    out = paired_difference([0.5, 0.6, 0.55, 0.52], [0.51, 0.59, 0.56, 0.51])
    assert out["verdict"] == "no clear difference"
