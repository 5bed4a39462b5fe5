"""The outcome of a comparison: plain records that the renderers and the exit code read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from telebench.analysis.compare.decision import Verdict
from telebench.analysis.compare.samples import RowKey
from telebench.analysis.compare.thresholds import Threshold


@dataclass(frozen=True)
class FileInfo:
    path: Path
    description: str


@dataclass(frozen=True)
class Comparison:
    """One metric of one row, compared under one threshold."""

    key: RowKey
    metric: str
    stat: str | None  # median/mean/min/max over seeds; None for a single stated value
    threshold: Threshold
    unit: str
    base: float
    new: float
    n_base: int
    n_new: int
    change: float | None  # in the threshold's terms: a fraction when relative, else absolute
    relative_change: float | None
    p_value: float | None
    verdict: Verdict
    note: str = ""

    @property
    def metric_label(self) -> str:
        """The metric, naming its statistic when it is not the default median."""
        return f"{self.metric} ({self.stat})" if self.stat not in (None, "median") else self.metric


@dataclass
class CompareReport:
    kind: str  # telebench | pytest-benchmark
    base: FileInfo
    new: FileInfo
    key_fields: tuple[str, ...]
    thresholds: list[Threshold]
    alpha: float
    fail_on_improvement: bool
    rows: list[Comparison] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    only_in_base: list[RowKey] = field(default_factory=list)
    only_in_new: list[RowKey] = field(default_factory=list)

    @property
    def failures(self) -> list[Comparison]:
        """Rows that fail the check: regressions, and improvements too under --fail-on-improvement."""
        failing = {Verdict.REGRESSED} | ({Verdict.IMPROVED} if self.fail_on_improvement else set())
        return [row for row in self.rows if row.verdict in failing]

    @property
    def exit_code(self) -> int:
        """0 pass, 1 a failing row, 2 nothing compared (a wrong file must not pass a CI check)."""
        if not self.rows:
            return 2
        return 1 if self.failures else 0

    def counts(self) -> dict[str, int]:
        tally = Counter(row.verdict for row in self.rows)
        return {v.value: tally.get(v, 0) for v in Verdict}
