"""The statistics a report states: its primary-metric line and its Methods section, by name, with one
reason each (the pre-registered and exploratory families apart, where the suite declared its comparisons)."""

from __future__ import annotations

from typing import Any

from telebench.analysis.censored import INTERVAL_NAME, TEST_NAME
from telebench.analysis.verdicts import CORRECTION_NAME, min_pairs_for
from telebench.render import fmt
from telebench.render.preregistered import correction_phrase, is_declared
from telebench.render.terminal import report_settings


def primary_line(results: dict[str, Any]) -> str:
    metric, alpha, m = report_settings(results)
    return (f"**Primary metric: {fmt.metric_name(metric)}.** Verdicts: {TEST_NAME}, {CORRECTION_NAME}-corrected "
            f"{correction_phrase(results, m)} at α = {alpha:g}; intervals: {INTERVAL_NAME}, at the level shown.")


def methods_section(results: dict[str, Any]) -> str:
    """The statistics behind every number, by name, with one reason each."""
    metric, alpha, m = report_settings(results)
    need = min_pairs_for(alpha)
    items = [
        f"**Primary metric**: {fmt.metric_name(metric)} (`{metric}`). Only it decides verdicts; the other metrics "
        "are shown beside it, each Holm-corrected over its own rows.",
        f"**Test**: {TEST_NAME} on the per-seed paired effect, over the seeds whose sign is known (ties "
        "dropped). Under no effect each known sign is a fair coin, whatever the censoring, so the p-value is "
        f"exact at any n; it needs ≥ {need} informative seeds to reach α = {alpha:g}.",
        f"**Interval**: {INTERVAL_NAME}: lower end the k-th smallest per-seed lower bound, upper end the k-th "
        "largest upper bound, level ≥ 1 − 2·P(Binom(n, ½) ≤ k − 1) for any distribution (censoring only "
        "widens it); k is the largest reaching 95%, else 1, and the level printed is the one reached; "
        "below 80% it is called a range.",
        "**Censoring**: a miss is right-censored at its own training clock (or steps): with the arm censored "
        "the per-seed log-speedup is at most log(baseline / arm's budget), with the baseline censored at "
        "least log(baseline's budget / arm); seeds where both missed are left out. A median only bounded "
        "is printed as a bound, never as ∞. Never-censored metrics stand beside it: final training and "
        "validation loss and the area under the log training-loss curve (a diverged trial is worse than "
        "any finite loss).",
        f"**Correction**: {CORRECTION_NAME}'s step-down over the m = {m} comparisons that can get *faster* or "
        f"*slower* (rows with a p-value, identical arms excepted): the chance of any false verdict in this "
        f"report is at most {alpha:g}." if not is_declared(results) else
        f"**Correction**: {CORRECTION_NAME}'s step-down {correction_phrase(results, m)} (rows with a p-value, "
        "identical arms excepted): the declared family was fixed before the run, so the chance of any false "
        f"verdict among the pre-registered comparisons is at most {alpha:g}, and so it is among the exploratory "
        "ones, whose verdicts are hypotheses for fresh seeds.",
        "**identical**: every history point (step, training and validation loss, validation accuracy) and "
        "every final value equal the baseline's bit for bit on every paired seed; such an arm did nothing.",
        f"**too few seeds**: fewer than {need} informative seeds, so no outcome of the test could reach "
        f"α = {alpha:g} (2·½⁵ = 0.0625).",
        "**Seeds advice**: σ = the standard deviation of the per-seed log-effects; under a true 10% effect a "
        "seed favours the arm with probability Φ(log 1.1 / σ); the advice is the smallest n whose sign test "
        "then reaches α with 80% power (alone, and at α/m among this report's comparisons).",
    ]
    return "\n".join(f"- {item}" for item in items)
