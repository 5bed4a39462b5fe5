"""The `--fail-on` grammar and the verdict logic of `telebench compare`, on hand-made samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebench.analysis.compare.decision import Verdict, change_between, decide, smallest_p
from telebench.analysis.compare.samples import Sample
from telebench.analysis.compare.thresholds import (
    PYTEST_BENCHMARK_METRICS,
    TELEBENCH_METRICS,
    check_thresholds,
    default_thresholds,
    parse_threshold,
)
from telebench.errors import UserError

TIME = TELEBENCH_METRICS["time_to_target"]
MISSES = TELEBENCH_METRICS["misses"]


def seeds(*values: float) -> Sample:
    return Sample(observations=tuple(values), n=len(values))


# ---- grammar --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "direction", "limit", "relative", "stat"),
    [
        ("time_to_target:+10%", "time_to_target", 1, 0.10, True, None),
        ("steps_to_target:+5%:mean", "steps_to_target", 1, 0.05, True, "mean"),
        ("teleport_overhead:+0.05", "teleport_overhead", 1, 0.05, False, None),
        ("speedup_time:-10%", "speedup_time", -1, 0.10, True, None),
        ("misses:+0", "misses", 1, 0.0, False, None),
        ("final_val_loss:+2.5%:max", "final_val_loss", 1, 0.025, True, "max"),
        (" ops:-1e1% ", "ops", -1, 0.10, True, None),
    ],
)
def test_parse_threshold_reads_every_part(text, metric, direction, limit, relative, stat) -> None:
    rule = parse_threshold(text)
    assert (rule.metric, rule.bad_direction, rule.relative, rule.stat) == (metric, direction, relative, stat)
    assert rule.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    "text",
    ["time_to_target:10%", "time_to_target", "time_to_target:+", "time_to_target:+x%", ":+10%",
     "time_to_target:+10%:p90", "time_to_target:+10%%", "time_to_target:+10%:median:extra", "time to target:+1"],
)
def test_a_rule_that_does_not_parse_gets_the_grammar(text: str) -> None:
    with pytest.raises(UserError, match=r"METRIC:THRESHOLD\[:STAT\]"):
        parse_threshold(text)


@given(
    metric=st.sampled_from(sorted(TELEBENCH_METRICS)),
    sign=st.sampled_from("+-"),
    number=st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False, allow_infinity=False),
    percent=st.booleans(),
)
def test_parse_threshold_round_trips(metric: str, sign: str, number, percent: bool) -> None:
    rule = parse_threshold(f"{metric}:{sign}{number}{'%' if percent else ''}")
    assert rule.metric == metric and rule.bad_direction == (1 if sign == "+" else -1)
    assert rule.limit == pytest.approx(float(number) / (100 if percent else 1))
    assert parse_threshold(f"{metric}:{rule.limit_text}").limit == pytest.approx(rule.limit)


def test_metric_names_are_checked_against_the_file_kind() -> None:
    check_thresholds("telebench", default_thresholds("telebench"))
    check_thresholds("pytest-benchmark", default_thresholds("pytest-benchmark"))
    with pytest.raises(UserError, match="unknown metric 'mean' for a telebench results file"):
        check_thresholds("telebench", [parse_threshold("mean:+5%")])
    with pytest.raises(UserError, match="unknown metric 'time_to_target' for a pytest-benchmark"):
        check_thresholds("pytest-benchmark", [parse_threshold("time_to_target:+5%")])
    with pytest.raises(UserError, match="misses is a count"):
        check_thresholds("telebench", [parse_threshold("misses:+0:max")])
    with pytest.raises(UserError, match="already a statistic"):
        check_thresholds("pytest-benchmark", [parse_threshold("mean:+5%:min")])


# ---- change and test size -------------------------------------------------------------------------


def test_change_treats_misses_as_infinite() -> None:
    assert change_between(1.0, 1.2, relative=True) == pytest.approx(0.2)
    assert change_between(1.0, 1.2, relative=False) == pytest.approx(0.2)
    assert change_between(2.0, 1.0, relative=True) == pytest.approx(-0.5)
    assert change_between(1.0, math.inf, relative=True) == math.inf  # a new miss
    assert change_between(math.inf, 1.0, relative=True) == -math.inf  # a cured miss
    assert change_between(math.inf, math.inf, relative=True) == 0.0  # missed on both sides
    assert change_between(0.0, 1.0, relative=True) == math.inf
    assert change_between(0.0, 1.0, relative=False) == 1.0


def test_smallest_p_matches_the_exact_test() -> None:
    assert smallest_p(5, 5) == pytest.approx(2 / 252)
    assert smallest_p(3, 3) == pytest.approx(0.1)
    assert smallest_p(1, 1) == 1.0


# ---- verdicts -------------------------------------------------------------------------------------

BASE5 = seeds(0.80, 0.82, 0.84, 0.86, 0.88)


def test_a_consistent_slowdown_on_five_seeds_regresses() -> None:
    d = decide(BASE5, seeds(0.96, 0.98, 1.01, 1.03, 1.06), parse_threshold("time_to_target:+10%"), TIME, 0.01, "seeds")
    assert d.verdict is Verdict.REGRESSED and d.p_value == pytest.approx(2 / 252) and d.note == ""
    assert d.change == pytest.approx(1.01 / 0.84 - 1)


def test_a_consistent_speedup_improves_and_a_small_change_is_unchanged() -> None:
    rule = parse_threshold("time_to_target:+10%")
    assert decide(BASE5, seeds(0.60, 0.61, 0.62, 0.63, 0.64), rule, TIME, 0.01, "seeds").verdict is Verdict.IMPROVED
    small = decide(BASE5, seeds(0.82, 0.84, 0.86, 0.88, 0.90), rule, TIME, 0.01, "seeds")
    assert small.verdict is Verdict.UNCHANGED and small.p_value is None


def test_an_overlapping_slowdown_is_noisy() -> None:
    d = decide(BASE5, seeds(0.70, 0.97, 0.99, 0.75, 0.95), parse_threshold("time_to_target:+10%"), TIME, 0.01, "seeds")
    assert d.verdict is Verdict.NOISY and d.p_value > 0.5 and "not significant" in d.note


def test_the_direction_of_the_rule_decides_what_is_bad() -> None:
    speedup = TELEBENCH_METRICS["speedup_time"]
    lower = seeds(1.00, 1.01, 1.02, 1.03, 1.04)
    higher = seeds(1.30, 1.31, 1.32, 1.33, 1.34)
    assert decide(higher, lower, parse_threshold("speedup_time:-10%"), speedup, 0.01, "seeds").verdict is Verdict.REGRESSED
    assert decide(lower, higher, parse_threshold("speedup_time:-10%"), speedup, 0.01, "seeds").verdict is Verdict.IMPROVED


def test_too_few_seeds_count_without_a_test_and_say_so() -> None:
    d = decide(seeds(0.80), seeds(0.96), parse_threshold("time_to_target:+10%"), TIME, 0.01, "seeds")
    assert d.verdict is Verdict.REGRESSED and d.p_value is None
    assert "1 vs 1 seeds: too few for a significance test" in d.note


def test_three_seeds_cannot_reach_alpha_001_so_the_crossing_counts() -> None:
    base, new = seeds(0.80, 0.82, 0.84), seeds(0.96, 0.98, 1.00)
    d = decide(base, new, parse_threshold("time_to_target:+10%"), TIME, 0.01, "seeds")
    assert d.verdict is Verdict.REGRESSED and "cannot reach α=0.01" in d.note
    tested = decide(base, new, parse_threshold("time_to_target:+10%"), TIME, 0.2, "seeds")
    assert tested.verdict is Verdict.REGRESSED and tested.p_value == pytest.approx(0.1)


def test_a_new_miss_is_a_regression_of_the_miss_count_and_of_the_maximum() -> None:
    assert decide(Sample(value=0, n=5), Sample(value=1, n=5), parse_threshold("misses:+0"), MISSES, 0.01, "seeds").verdict is Verdict.REGRESSED
    assert decide(Sample(value=1, n=5), Sample(value=1, n=5), parse_threshold("misses:+0"), MISSES, 0.01, "seeds").verdict is Verdict.UNCHANGED
    one = seeds(0.96)
    missed = decide(one, seeds(math.inf), parse_threshold("time_to_target:+10%"), TIME, 0.01, "seeds")
    assert missed.verdict is Verdict.REGRESSED and missed.change == math.inf
    both = decide(seeds(math.inf), seeds(math.inf), parse_threshold("time_to_target:+10%"), TIME, 0.01, "seeds")
    assert both.verdict is Verdict.UNCHANGED and "on both sides" in both.note


def test_the_statistic_is_taken_over_seeds_with_misses() -> None:
    sample = seeds(0.8, 0.9, math.inf)
    assert sample.statistic("median") == 0.9
    assert sample.statistic("max") == math.inf and sample.statistic("mean") == math.inf
    assert sample.statistic("min") == 0.8


def test_pytest_benchmark_metrics_use_the_stated_value_and_rounds_for_the_test() -> None:
    rounds = tuple(1e-3 * (1 + 0.01 * i) for i in range(10))
    base = Sample(observations=rounds, value=1.05e-3, n=10)
    new = Sample(observations=tuple(1.3 * r for r in rounds), value=1.3 * 1.05e-3, n=10)
    median = PYTEST_BENCHMARK_METRICS["median"]
    d = decide(base, new, parse_threshold("median:+10%"), median, 0.01, "rounds")
    assert d.verdict is Verdict.REGRESSED and d.p_value < 1e-3
    spread = decide(Sample(value=1e-5, n=10), Sample(value=2e-5, n=10), parse_threshold("stddev:+50%"),
                    PYTEST_BENCHMARK_METRICS["stddev"], 0.01, "rounds")
    assert spread.verdict is Verdict.REGRESSED and "no significance test applies to stddev" in spread.note
