"""Read a results.json for reporting: check it is ours, and recompute its targets and summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telebench.analysis.summary import analyse, resolve_targets
from telebench.results.schema import load_results as read_results


def load_results(path: Path) -> dict[str, Any]:
    """Load and validate a results file (see telebench.results.schema.load_results), with a fresh summary."""
    return ensure_summary(read_results(path))


def ensure_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Results as the reports need them: targets and summary recomputed from the trials with the current
    statistics, so a file written by an older telebench re-renders with today's rules.

    The primary metric, α and any pre-registered comparisons come from `results["analysis"]` (default: time
    to target at 0.05, none declared), whose `preregistered` rows are recomputed too. A file without trials
    (a trimmed one) keeps the summary it has, as there is nothing to recompute from.
    """
    trials = results.get("trials") or []
    if not trials:
        return results if "summary" in results else {**results, "summary": []}
    resolved = resolve_targets(trials)
    analysis, summary = analyse(resolved, results.get("analysis") or {})
    return {**results, "analysis": analysis, "trials": resolved, "summary": summary}
