"""Read a results.json for reporting: check it is ours, and fill in a summary older writers left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telebench.analysis.summary import resolve_targets, summarise
from telebench.results.schema import load_results as read_results


def load_results(path: Path) -> dict[str, Any]:
    """Load and validate a results file (see telebench.results.schema.load_results), with a summary filled in."""
    return ensure_summary(read_results(path))


def ensure_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Results as the reports need them: targets resolved and a summary present (computed if absent)."""
    trials = results.get("trials") or []
    if any("target" not in t for t in trials):
        trials = resolve_targets(trials)
        results = {**results, "trials": trials, "summary": summarise(trials)}
    elif "summary" not in results:
        results = {**results, "summary": summarise(trials)}
    return results
