"""Command-line overrides shared by run, validate and list: --seeds, --devices, --arms, --set, ..."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from telebench.config.base import DEVICE_PATTERN
from telebench.config.yaml_io import LimitError, load_value, read_yaml
from telebench.errors import UserError

_PATH_PART = re.compile(r"\.?([A-Za-z_][\w-]*)|\[([^\]]+)\]")
MAX_SEEDS = 10_000  # seeds one --seeds may give; a run plans at most MAX_PLANNED_UNITS units in all
MAX_PLANNED_UNITS = 100_000  # units (trials, networks, cases) one run may plan; checked by telebench.commands


@dataclass
class Overrides:
    """Command-line values that replace the suite's, in every case (`sets` edit the YAML itself)."""

    seeds: list[int] | None = None
    devices: list[str] | None = None
    arms: list[str] | None = None  # arm labels to keep; a built-in kind not in a case is added to it
    budget_steps: int | None = None
    eval_every: int | None = None
    cases: list[str] | None = None  # case names to keep
    networks: int | None = None  # networks per case (correlation studies)
    allow_large: bool = False  # run models estimated to need more than half the machine's memory
    sets: list[str] = field(default_factory=list)  # "dotted.key[0].path=value", value parsed as YAML

    def __post_init__(self) -> None:
        if self.seeds is not None and (not self.seeds or min(self.seeds) < 0 or len(set(self.seeds)) < len(self.seeds)):
            raise UserError("--seeds: give distinct non-negative integers, e.g. --seeds 0,1,2 or --seeds 0-4.")
        for name in self.devices or []:
            if not DEVICE_PATTERN.match(name):
                raise UserError(f"--devices: unknown device {name!r}; use cpu, cuda, cuda:N or auto.")
        for option, value in (("--budget-steps", self.budget_steps), ("--eval-every", self.eval_every),
                              ("--networks", self.networks)):
            if value is not None and value <= 0:
                raise UserError(f"{option}: must be a positive number of steps, got {value}.")


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _parse_seeds(text: str) -> list[int]:
    """Seeds from "0,1,2" or "0-4"; the count is checked before any range is expanded."""
    ranges: list[range] = []
    for part in _split(text) or []:
        lo, dash, hi = part.partition("-")
        try:
            ranges.append(range(int(lo), int(hi) + 1) if dash else range(int(part), int(part) + 1))
        except ValueError:
            raise UserError(f"--seeds: cannot read {part!r}; give integers or ranges, e.g. 0,1,2 or 0-4.") from None
    count = sum(len(r) for r in ranges)
    if count > MAX_SEEDS:
        raise UserError(f"--seeds: {text.strip()!r} gives {count:,} seeds, over the limit of {MAX_SEEDS:,} per run; "
                        "give a smaller range, e.g. --seeds 0-9.")
    return [seed for r in ranges for seed in r]


def overrides_from_options(
    seeds: str | None = None,
    devices: str | None = None,
    arms: str | None = None,
    budget_steps: int | None = None,
    eval_every: int | None = None,
    cases: str | None = None,
    sets: list[str] | None = None,
    networks: int | None = None,
    allow_large: bool = False,
) -> Overrides:
    """Build Overrides from the raw command-line strings shared by `run`, `validate` and `list`."""
    return Overrides(
        seeds=None if seeds is None else _parse_seeds(seeds),
        devices=_split(devices),
        arms=_split(arms),
        budget_steps=budget_steps,
        eval_every=eval_every,
        cases=_split(cases),
        networks=networks,
        allow_large=allow_large,
        sets=list(sets or []),
    )


def _apply_set(raw: dict[str, Any], text: str) -> None:
    """Apply one `--set key.path[0]=value` to the raw YAML; a bracket may hold an index or a name/label."""
    key, sep, value_text = text.partition("=")
    parts: list[str] = []
    pos = 0
    for match in _PATH_PART.finditer(key.strip()):
        if match.start() != pos:
            break
        parts.append(match.group(0))
        pos = match.end()
    if not sep or not parts or pos != len(key.strip()):
        raise UserError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. defaults.batch_size=64 or "
                        "cases[0].optimizers[1].lr=0.01.")
    try:
        value = load_value(value_text)
    except LimitError as exc:
        raise UserError(f"--set {text[:60]!r}: the value {exc}.") from None
    except yaml.YAMLError:
        raise UserError(f"--set {text!r}: the value is not valid YAML; quote it if it holds ':' or '#'.") from None
    node: Any = raw
    walked = ""
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        if part.startswith("["):
            token = part[1:-1].strip()
            if not isinstance(node, list):
                raise UserError(f"--set {text!r}: {walked or 'the top level'} is not a list.")
            index = len(node) if last and token == str(len(node)) else _list_index(node, token)
            if index is None:
                raise UserError(f"--set {text!r}: {walked} has no item {token!r} (it has {len(node)}, indexed "
                                f"from 0 or by name; [{len(node)}] appends).")
            if index == len(node):
                node.append(None)
            step: str | int = index
        else:
            step = part.lstrip(".")
            if not isinstance(node, dict):
                raise UserError(f"--set {text!r}: {walked or 'the top level'} is not a mapping.")
            if not last and step not in node:
                node[step] = {}
        walked += f"[{step}]" if isinstance(step, int) else (f".{step}" if walked else step)
        if last:
            node[step] = value
        else:
            node = node[step]


def _list_index(items: list[Any], token: str) -> int | None:
    if re.fullmatch(r"-?\d+", token):
        index = int(token)
        return index if -len(items) <= index < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and token in (item.get("name"), item.get("label")) or item == token:
            return i
    return None


def read_suite(path: Path, overrides: Overrides) -> tuple[dict[str, Any], str]:
    """A suite file's YAML with every `--set` applied, and its `kind` (train when unset)."""
    raw = read_yaml(path)
    for text in overrides.sets:
        _apply_set(raw, text)
    kind = raw.get("kind", "train")
    return raw, kind if isinstance(kind, str) else repr(kind)
