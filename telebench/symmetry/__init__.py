"""Symmetry teleportation for MLPs: exact groups, a cheap search, and honest invariance accounting.

    from telebench.symmetry import teleport
    record = teleport(model, x, y, loss_fn, group="rescale", objective="grad_norm", steps=10, lr=1e-2)

The maths knows nothing of suites, files or terminals; see ``teleport`` for the options.
"""

from telebench.symmetry.architecture import Architecture, SymmetryError
from telebench.symmetry.groups import (
    GROUPS,
    ExactGroup,
    GLDataGroup,
    Group,
    LinearGroup,
    RescaleGroup,
    check_model,
    get_group,
)
from telebench.symmetry.objectives import OBJECTIVES, Evaluation, GradNorm, Objective, get_objective
from telebench.symmetry.problem import Problem
from telebench.symmetry.teleport import LayerTransform, TeleportRecord, teleport

__all__ = [
    "GROUPS",
    "OBJECTIVES",
    "Architecture",
    "Evaluation",
    "ExactGroup",
    "GLDataGroup",
    "GradNorm",
    "Group",
    "LayerTransform",
    "LinearGroup",
    "Objective",
    "Problem",
    "RescaleGroup",
    "SymmetryError",
    "TeleportRecord",
    "check_model",
    "get_group",
    "get_objective",
    "teleport",
]
