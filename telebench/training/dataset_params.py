"""Declared dataset options: each one's default, type and range, checked before any data is loaded.

A suite names its dataset's options as plain values; declaring them here lets a bad value fail at
suite validation with a message naming the fix, and lets `telebench list` show the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from telebench.errors import UserError

_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Param:
    """One dataset option: its default, type and allowed range, for validation and `telebench list`."""

    default: Any
    kind: type
    minimum: float | None = None  # inclusive
    below: float | None = None  # exclusive upper bound
    choices: tuple[str, ...] | None = None
    optional: bool = False  # None allowed

    def check(self, dataset: str, key: str, value: Any) -> Any:
        where = f"dataset {dataset!r} parameter {key!r}"
        if value is None and self.optional:
            return None
        ok_type = isinstance(value, self.kind) and not (isinstance(value, bool) and self.kind is not bool)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok_type = float(value), True
        if not ok_type:
            wanted = _KIND_WORDS.get(self.kind, self.kind.__name__)
            raise UserError(f"{where} must be {wanted}, got {value!r}; fix it in the case's dataset params.")
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{where} is {value!r}; use one of {', '.join(self.choices)}.")
        if self.minimum is not None and value < self.minimum:
            raise UserError(f"{where} must be at least {self.minimum}, got {value!r}.")
        if self.below is not None and value >= self.below:
            raise UserError(f"{where} must be below {self.below}, got {value!r}.")
        return value


def count_param(default: int, minimum: int = 1) -> Param:
    """An integer count (examples, features, classes) of at least `minimum`."""
    return Param(default, int, minimum=minimum)


SEED_PARAM = Param(0, int, minimum=0)
_ROOT = Param(None, str, optional=True)
_DOWNLOAD = Param(False, bool)


def image_params(n_train: int, n_val: int, n_test: int) -> dict[str, Param]:
    """The options every file-backed image dataset takes, with that dataset's default sizes."""
    return {
        "n_train": count_param(n_train),
        "n_val": count_param(n_val),
        "n_test": count_param(n_test, minimum=0),
        "split_seed": Param(1, int, minimum=0),
        "root": _ROOT,
        "download": _DOWNLOAD,
    }
