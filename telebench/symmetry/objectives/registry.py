"""The registry of teleport objectives: one module each, one name each."""

from __future__ import annotations

from typing import Any

from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.objectives.curvature import Curvature
from telebench.symmetry.objectives.curvature_reference import CurvatureReference
from telebench.symmetry.objectives.grad_norm import GradNorm
from telebench.symmetry.objectives.sharpness import Sharpness

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (GradNorm, Sharpness, Curvature, CurvatureReference)}


def get_objective(objective: str | Objective, **kwargs: Any) -> Objective:
    """An objective instance from its registry name and options (an instance passes through)."""
    if isinstance(objective, Objective):
        if kwargs:
            raise ValueError("objective_kwargs cannot be combined with an Objective instance.")
        return objective
    try:
        cls = OBJECTIVES[objective]
    except KeyError:
        raise ValueError(f"unknown teleport objective {objective!r}; choose one of {sorted(OBJECTIVES)}.") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options {sorted(kwargs)} for objective {objective!r}: {exc}") from None


