"""`--fail-on` rules: the grammar, the metrics each file kind offers, and the defaults.

A rule says which direction of change is bad and by how much, so one grammar covers metrics where
bigger is worse (time to target) and where smaller is worse (speed-up, operations per second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telebench.errors import UserError

STATS = ("median", "mean", "min", "max")

GRAMMAR = (
    "write METRIC:THRESHOLD[:STAT], e.g. time_to_target:+10% or teleport_overhead:+0.05, where THRESHOLD is "
    "+N or -N (+: an increase is bad, -: a decrease is bad), relative when it ends in %, absolute otherwise, "
    "and STAT is one of " + ", ".join(STATS) + " (default median)"
)

_RULE = re.compile(
    r"^(?P<metric>[a-z][a-z0-9_]*):(?P<sign>[+-])(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"(?P<percent>%)?(?::(?P<stat>[a-z]+))?$"
)


@dataclass(frozen=True)
class MetricInfo:
    """A metric a file kind offers.

    `per_seed` metrics are summarised by a STAT over seeds; the others are one stated value.
    `testable` says whether a Mann-Whitney U test on the underlying observations speaks to the metric:
    it does for location statistics, not for spreads (stddev, iqr) or counts.
    """

    name: str
    unit: str  # s, steps, x (ratio), fraction, loss, count, ops/s
    per_seed: bool
    testable: bool = True


TELEBENCH_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("time_to_target", "s", per_seed=True),
        MetricInfo("steps_to_target", "steps", per_seed=True),
        MetricInfo("teleport_overhead", "fraction", per_seed=True),
        MetricInfo("speedup_time", "x", per_seed=True),
        MetricInfo("speedup_steps", "x", per_seed=True),
        MetricInfo("final_val_loss", "loss", per_seed=True),
        MetricInfo("final_train_loss", "loss", per_seed=True),
        MetricInfo("misses", "count", per_seed=False, testable=False),
    )
}

PYTEST_BENCHMARK_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        *(MetricInfo(name, "s", per_seed=False) for name in ("min", "max", "mean", "median", "q1", "q3", "ld15iqr", "hd15iqr")),
        *(MetricInfo(name, "s", per_seed=False, testable=False) for name in ("stddev", "iqr")),
        MetricInfo("ops", "ops/s", per_seed=False),
    )
}

METRICS = {"telebench": TELEBENCH_METRICS, "pytest-benchmark": PYTEST_BENCHMARK_METRICS}

KIND_NAMES = {"telebench": "a telebench results file", "pytest-benchmark": "a pytest-benchmark JSON file"}


@dataclass(frozen=True)
class Threshold:
    """One `--fail-on` rule.

    `bad_direction` is +1 when an increase is bad and -1 when a decrease is bad; `limit` is the size of
    change (a fraction when `relative`) that a difference must exceed to count.
    """

    metric: str
    bad_direction: int
    limit: float
    relative: bool
    stat: str | None = None  # None: the metric's default (median over seeds, or the value itself)
    text: str = ""

    def __str__(self) -> str:
        return self.text or f"{self.metric}:{self.limit_text}" + (f":{self.stat}" if self.stat else "")

    @property
    def limit_text(self) -> str:
        sign = "+" if self.bad_direction > 0 else "-"
        return f"{sign}{self.limit * 100:g}%" if self.relative else f"{sign}{self.limit:g}"

    def statistic(self, info: MetricInfo) -> str | None:
        """The statistic over seeds this rule reads, or None when the metric is a single value."""
        return (self.stat or "median") if info.per_seed else None


def parse_threshold(text: str) -> Threshold:
    """Parse `METRIC:THRESHOLD[:STAT]`; the metric name is checked later, against the file kind."""
    rule = text.strip()
    match = _RULE.match(rule)
    if match is None:
        raise UserError(f"--fail-on {text!r} does not parse; {GRAMMAR}.")
    stat = match["stat"]
    if stat is not None and stat not in STATS:
        raise UserError(f"--fail-on {text!r} has an unknown statistic {stat!r}; {GRAMMAR}.")
    number = float(match["number"])
    return Threshold(
        metric=match["metric"],
        bad_direction=1 if match["sign"] == "+" else -1,
        limit=number / 100 if match["percent"] else number,
        relative=bool(match["percent"]),
        stat=stat,
        text=rule,
    )


DEFAULT_RULES = {
    "telebench": ("time_to_target:+10%", "steps_to_target:+10%", "misses:+0", "speedup_time:-10%"),
    "pytest-benchmark": ("median:+10%",),
}


def default_thresholds(kind: str) -> list[Threshold]:
    return [parse_threshold(rule) for rule in DEFAULT_RULES[kind]]


def check_thresholds(kind: str, thresholds: list[Threshold]) -> None:
    """Reject rules whose metric the file kind lacks, or that ask a statistic of a single value."""
    metrics = METRICS[kind]
    for rule in thresholds:
        info = metrics.get(rule.metric)
        if info is None:
            raise UserError(
                f"--fail-on {str(rule)!r} names an unknown metric {rule.metric!r} for {KIND_NAMES[kind]}; "
                f"use one of {', '.join(metrics)}."
            )
        if rule.stat is not None and not info.per_seed:
            what = "is a count over seeds" if kind == "telebench" else "is already a statistic of the rounds"
            raise UserError(
                f"--fail-on {str(rule)!r}: {rule.metric} {what} and takes no statistic; "
                f"drop ':{rule.stat}' from the rule."
            )
