"""The experiment kinds by their YAML `kind:`, and the one loader that reads any suite file.

Each kind's plugin is imported only when a suite asks for it, so `validate` of a train suite does not
pay for the meta-learning code.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from telebench.config.overrides import Overrides, read_suite
from telebench.errors import UserError
from telebench.experiments.base import Experiment, Loaded

KINDS = ("train", "meta", "correlation")


def get_experiment(kind: str) -> Experiment:
    """The plugin of `kind`; a UserError names the kinds there are."""
    if kind == "train":
        from telebench.experiments.pairs.experiment import EXPERIMENT as pairs

        return pairs
    if kind == "meta":
        from telebench.experiments.meta.experiment import EXPERIMENT as meta

        return meta
    if kind == "correlation":
        from telebench.experiments.correlation.experiment import EXPERIMENT as correlation

        return correlation
    near = difflib.get_close_matches(str(kind), KINDS, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise UserError(f"kind: {kind!r} is not an experiment kind; {hint}use one of {', '.join(KINDS)}.")


def load_config(path: str | Path, overrides: Overrides | None = None, *,
                check_devices: bool = True) -> tuple[Experiment, Any]:
    """Read any suite file, apply --set and the other overrides, and validate it with its kind's schema."""
    path = Path(path)
    ov = overrides or Overrides()
    raw, kind = read_suite(path, ov)
    try:
        exp = get_experiment(kind)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    config: Loaded = exp.load(path, raw, ov, check_devices=check_devices)
    return exp, config
