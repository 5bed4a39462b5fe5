"""What `compare` reads out of one input file, independent of the file's format.

Both readers (telebench results, pytest-benchmark JSON) turn a file into a `Source`: rows keyed by the
fields that identify them, each row holding one `Sample` per metric. Everything after reading is the
same code for both formats.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

RowKey = tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    """One file's evidence about one metric of one row.

    `observations` are per seed (telebench; +inf marks a missed target) or per round (pytest-benchmark
    raw data), and feed both the statistic and the significance test. `value` is a number the file states
    directly (a miss count, a pytest-benchmark stats field) and is used when no statistic is asked for.
    """

    observations: tuple[float, ...] = ()
    value: float | None = None
    n: int = 0  # seeds or rounds behind the sample, for display

    def statistic(self, stat: str | None) -> float:
        """The sample summarised by `stat` (median, mean, min, max), or the stated value for None."""
        if stat is None:
            if self.value is None:
                raise ValueError("this sample states no single value; ask for a statistic")
            return self.value
        values = list(self.observations)
        if stat == "median":
            return statistics.median(values)
        if stat == "mean":
            return statistics.fmean(values)
        if stat == "min":
            return min(values)
        if stat == "max":
            return max(values)
        raise ValueError(f"unknown statistic {stat!r}")


@dataclass
class Source:
    """One parsed input file."""

    kind: str  # telebench | pytest-benchmark
    path: Path
    description: str  # one line for report headers: suite or date, commit
    key_fields: tuple[str, ...]  # names of the parts of a RowKey, e.g. (case, arm, optimizer, device)
    observation_noun: str  # "seeds" or "rounds", for notes about sample sizes
    rows: dict[RowKey, dict[str, Sample]] = field(default_factory=dict)
    # Facts that should be equal in both files for their numbers to be comparable (torch version, CPU,
    # a case's target); each difference becomes one warning line.
    context: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings about this file alone


def row_label(key: RowKey) -> str:
    return " / ".join(key)
