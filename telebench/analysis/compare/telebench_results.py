"""Read a train results file (docs/results-schema.md) into per-seed samples.

Per-seed values come from `trials`, so that a significance test sees every seed; a row that has a
summary entry but no trials (a trimmed baseline file) falls back to the summary's per-seed `values`.
As in the summary, every trial but a skipped one is a seed, and a missed target (including a diverged
or crashed trial) is +inf for time and steps, so a new miss reads as a slowdown rather than vanishing.
Unlike the summary, a diverged trial's final loss is +inf rather than left out, for the same reason.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from telebench.analysis.compare.samples import RowKey, Sample, Source
from telebench.errors import UserError

KEY_FIELDS = ("case", "arm", "optimizer", "device")
SKIPPED = "skipped"  # a trial that never ran (e.g. no CUDA): not a seed
FIX = "the file does not follow docs/results-schema.md, so rerun `telebench run` to rewrite it"

# metric -> trial field; None in time/steps is a miss (+inf); None in a loss is +inf for a diverged trial.
TRIAL_FIELDS = {
    "time_to_target": "time_to_target_s",
    "steps_to_target": "steps_to_target",
    "teleport_overhead": "teleport_overhead",
    "final_val_loss": "final_val_loss",
    "final_train_loss": "final_train_loss",
}
SUMMARY_FIELDS = {**TRIAL_FIELDS, "speedup_time": "speedup_time", "speedup_steps": "speedup_steps"}
MISS_IS_INFINITE = ("time_to_target", "steps_to_target")
LOSSES = ("final_val_loss", "final_train_loss")
SPEEDUPS = {"speedup_time": "time_to_target_s", "speedup_steps": "steps_to_target"}


def read(path: Path, data: dict[str, Any]) -> Source:
    trials = _list(data, "trials", path)
    summary = _list(data, "summary", path)
    source = Source(
        kind="telebench",
        path=path,
        description=_describe(data),
        key_fields=KEY_FIELDS,
        observation_noun="seeds",
        context=_context(data),
    )
    if data.get("partial"):
        source.notes.append(f"{path.name} is partial (the run was interrupted), so some seeds may be missing.")

    groups: dict[RowKey, list[dict[str, Any]]] = defaultdict(list)
    left_out = 0
    for i, trial in enumerate(trials):
        key = _key(trial, f"trials[{i}]", path)
        if (trial.get("spec") or {}).get("role") == "calibration":  # they set the target; never a compared seed
            continue
        if trial.get("status") == SKIPPED:
            left_out += 1
            continue
        if _number(trial, "seed", f"trials[{i}]", path) is None:
            raise UserError(f"{path}: trials[{i}] has no `seed` number; {FIX}.")
        groups[key].append(trial)
    if left_out:
        source.notes.append(f"{path.name}: {left_out} skipped trial(s) were left out.")

    baselines = _baseline_trials(groups)
    for key, members in groups.items():
        members.sort(key=lambda t: t["seed"])
        source.rows[key] = _trial_samples(key, members, baselines, path)
    for i, row in enumerate(summary):
        key = _key(row, f"summary[{i}]", path)
        if key not in source.rows:
            source.rows[key] = _summary_samples(row, f"summary[{i}]", path)

    source.notes.extend(_host_notes(groups, path))
    for key, target in _targets(groups).items():
        source.context[f"target of {' / '.join(key)}"] = target
    return source


def _trial_samples(
    key: RowKey, trials: list[dict[str, Any]], baselines: dict[tuple, dict[str, Any]], path: Path
) -> dict[str, Sample]:
    samples: dict[str, Sample] = {}
    for metric, name in TRIAL_FIELDS.items():
        values = []
        for trial in trials:
            value = _number(trial, name, f"trial {trial.get('id', '?')}", path)
            if value is None or math.isnan(value):
                if metric in MISS_IS_INFINITE or (metric in LOSSES and trial.get("status") == "diverged"):
                    values.append(math.inf)
            else:
                values.append(value)
        if values:
            samples[metric] = Sample(observations=tuple(values), n=len(values))
    if not _is_baseline(trials[0]):
        case, _, optimizer, device = key
        for metric, name in SPEEDUPS.items():
            ratios = []
            for trial in trials:
                baseline = baselines.get((case, optimizer, device, trial["seed"]))
                if baseline is not None:
                    ratio = _speedup(_time_or_inf(baseline, name), _time_or_inf(trial, name))
                    if ratio is not None:
                        ratios.append(ratio)
            if ratios:
                samples[metric] = Sample(observations=tuple(ratios), n=len(ratios))
    misses = sum(trial.get("time_to_target_s") is None for trial in trials)
    samples["misses"] = Sample(value=float(misses), n=len(trials))
    return samples


def _summary_samples(row: dict[str, Any], where: str, path: Path) -> dict[str, Sample]:
    samples: dict[str, Sample] = {}
    for metric, name in SUMMARY_FIELDS.items():
        block = row.get(name)
        raw = block.get("values") if isinstance(block, dict) else None
        if not isinstance(raw, list):
            continue
        values = []
        for j, v in enumerate(raw):
            if v is None:
                if metric in MISS_IS_INFINITE:
                    values.append(math.inf)
            elif (isinstance(v, (int, float)) and not isinstance(v, bool)) or v in ("inf", "-inf"):
                values.append(float(v))  # the summary writes infinity as the string "inf"
            else:
                raise UserError(f"{path}: {where}.{name}.values[{j}] is not a number; {FIX}.")
        if values:
            samples[metric] = Sample(observations=tuple(values), n=len(values))
    misses = _number(row, "misses", where, path)
    if misses is not None:
        samples["misses"] = Sample(value=misses, n=int(_number(row, "n_seeds", where, path) or 0))
    return samples


def _speedup(baseline: float, arm: float) -> float | None:
    """Paired ratio baseline / arm, as the schema defines it: an arm's miss is 0, a baseline's miss is
    inf, and two misses say nothing."""
    if math.isinf(baseline) and math.isinf(arm):
        return None
    if arm == 0:
        return 1.0 if baseline == 0 else math.inf
    return baseline / arm


def _time_or_inf(trial: dict[str, Any], name: str) -> float:
    value = trial.get(name)
    return math.inf if value is None else float(value)


def _is_baseline(trial: dict[str, Any]) -> bool:
    spec = trial.get("spec")
    kind = spec.get("arm_kind") if isinstance(spec, dict) else None
    return (kind or trial["arm"]) == "baseline"


def _baseline_trials(groups: dict[RowKey, list[dict[str, Any]]]) -> dict[tuple, dict[str, Any]]:
    """Baseline trials by pair key (case, optimizer, device, seed): the partner of each arm's trial."""
    pairs: dict[tuple, dict[str, Any]] = {}
    for (case, _, optimizer, device), trials in groups.items():
        for trial in trials:
            if _is_baseline(trial):
                pairs.setdefault((case, optimizer, device, trial["seed"]), trial)
    return pairs


def _host_notes(groups: dict[RowKey, list[dict[str, Any]]], path: Path) -> list[str]:
    """Paired arms that ran on different machines make speed-ups compare machines, not methods."""
    hosts: dict[tuple, set[str]] = defaultdict(set)
    for (case, _, optimizer, device), trials in groups.items():
        for trial in trials:
            if trial.get("host"):
                hosts[(case, optimizer, device, trial["seed"])].add(str(trial["host"]))
    split: dict[str, set[str]] = defaultdict(set)
    for (case, *_), names in hosts.items():
        if len(names) > 1:
            split[case] |= names
    return [
        f"{path.name}: the arms of case {case!r} ran on different hosts ({', '.join(sorted(names))}), "
        "so its paired timings compare machines as well as arms."
        for case, names in split.items()
    ]


def _targets(groups: dict[RowKey, list[dict[str, Any]]]) -> dict[tuple[str, str, str], str]:
    """The target each case/optimizer/device was timed against; a moved target changes what time-to-target means."""
    targets: dict[tuple[str, str, str], str] = {}
    for (case, _, optimizer, device), trials in groups.items():
        for trial in trials:
            target = trial.get("target")
            if isinstance(target, dict) and isinstance(target.get("value"), (int, float)):
                targets.setdefault((case, optimizer, device), f"{target.get('metric', '?')} {target['value']:.4g}")
    return targets


def _context(data: dict[str, Any]) -> dict[str, str]:
    env = data.get("environment")
    env = env if isinstance(env, dict) else {}
    names = env.get("device_names")
    accelerators = (
        ", ".join(f"{dev}={name}" for dev, name in sorted(names.items()) if dev != "cpu")
        if isinstance(names, dict)
        else ""
    )
    facts = {
        "suite": data.get("suite"),
        "torch version": env.get("torch"),
        "CUDA version": env.get("cuda"),
        "device names": accelerators or None,
        "CPU model": env.get("cpu_model"),
        "threads": env.get("threads"),
    }
    return {label: "none" if value is None else str(value) for label, value in facts.items()}


def _describe(data: dict[str, Any]) -> str:
    env = data.get("environment")
    env = env if isinstance(env, dict) else {}
    parts = [f"suite {data.get('suite', '?')}", str(data.get("created", "undated"))]
    if env.get("git_commit"):
        parts.append(f"commit {str(env['git_commit'])[:7]}")
    return ", ".join(parts)


def _list(data: dict[str, Any], name: str, path: Path) -> list[dict[str, Any]]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise UserError(f"{path}: `{name}` must be a list of objects; {FIX}.")
    return value


def _key(record: dict[str, Any], where: str, path: Path) -> RowKey:
    parts = []
    for name in KEY_FIELDS:
        value = record.get(name)
        if not isinstance(value, str):
            raise UserError(f"{path}: {where} has no `{name}` string; {FIX}.")
        parts.append(value)
    return tuple(parts)


def _number(record: dict[str, Any], name: str, where: str, path: Path) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{path}: {where} has a non-numeric `{name}` ({value!r}); {FIX}.")
    return float(value)
