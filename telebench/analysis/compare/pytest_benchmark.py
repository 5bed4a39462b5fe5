"""Read a pytest-benchmark JSON file (`--benchmark-json`) into samples keyed by benchmark.

Each stats field (min, median, ops, ...) is a metric with the value the file states. When the file was
saved with `--benchmark-save-data`, the per-round timings are kept as observations so that location
statistics can be tested for significance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeGuard

from telebench.analysis.compare.samples import Sample, Source
from telebench.analysis.compare.thresholds import PYTEST_BENCHMARK_METRICS
from telebench.errors import UserError

FIX = "pass a file written by `pytest --benchmark-json=FILE`"


def read(path: Path, data: dict[str, Any]) -> Source:
    source = Source(
        kind="pytest-benchmark",
        path=path,
        description=_describe(data),
        key_fields=("benchmark",),
        observation_noun="rounds",
        context=_context(data),
    )
    benchmarks = data["benchmarks"]
    for i, bench in enumerate(benchmarks):
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict):
            raise UserError(f"{path}: benchmarks[{i}] has no `stats` object; {FIX}.")
        name = bench.get("fullname") or bench.get("name")
        if not isinstance(name, str):
            raise UserError(f"{path}: benchmarks[{i}] has no `fullname` or `name`; {FIX}.")
        key = (name,)
        if key in source.rows:
            source.notes.append(f"{path.name}: benchmark {name!r} appears twice; the first was kept.")
            continue
        source.rows[key] = _samples(bench["stats"], f"benchmarks[{i}].stats", path)
    return source


def _samples(stats: dict[str, Any], where: str, path: Path) -> dict[str, Sample]:
    raw = stats.get("data")
    data: tuple[float, ...] = ()
    if raw is not None:
        if not isinstance(raw, list) or not all(_is_number(v) for v in raw):
            raise UserError(f"{path}: {where}.data must be a list of numbers; {FIX}.")
        data = tuple(float(v) for v in raw)
    rounds = stats.get("rounds")
    n = int(rounds) if _is_number(rounds) else len(data)
    samples = {}
    for metric, info in PYTEST_BENCHMARK_METRICS.items():
        value = stats.get(metric)
        if value is None:
            continue
        if not _is_number(value):
            raise UserError(f"{path}: {where}.{metric} is not a number ({value!r}); {FIX}.")
        samples[metric] = Sample(observations=data if info.testable else (), value=float(value), n=n)
    return samples


def _context(data: dict[str, Any]) -> dict[str, str]:
    info = data.get("machine_info")
    info = info if isinstance(info, dict) else {}
    cpu = info.get("cpu")
    cpu = cpu if isinstance(cpu, dict) else {}
    facts = {
        "CPU model": cpu.get("brand_raw") or info.get("processor") or None,
        "CPU count": cpu.get("count"),
        "python version": info.get("python_version"),
        "machine": info.get("machine"),
    }
    return {label: "none" if value is None else str(value) for label, value in facts.items()}


def _describe(data: dict[str, Any]) -> str:
    parts = [str(data.get("datetime", "undated"))]
    commit = data.get("commit_info")
    if isinstance(commit, dict) and commit.get("id"):
        parts.append(f"commit {str(commit['id'])[:7]}")
    return "pytest-benchmark, " + ", ".join(parts)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
