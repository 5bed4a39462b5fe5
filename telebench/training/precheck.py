"""Fail before any training when a dataset cannot be loaded: every experiment kind checks this up front."""

from __future__ import annotations

from collections.abc import Iterable

from telebench.training.specs import DatasetSpec


def check_datasets(specs: Iterable[DatasetSpec], data_root: str | None = None) -> None:
    """Load each distinct dataset once, in first-seen order, so missing files stop the run with the
    loader's message (a UserError naming the fix) before any network trains."""
    from telebench.training.datasets import load_dataset  # torch: at run time only, not when a suite loads

    for spec in dict.fromkeys(specs):
        load_dataset(spec, data_root)
