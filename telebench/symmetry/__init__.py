"""Symmetry teleportation for MLPs: exact groups, a cheap search, and honest invariance accounting.

    from telebench.symmetry import teleport
    record = teleport(model, x, y, loss_fn, group="rescale", objective="grad_norm", steps=10, lr=1e-2)

Modules, one job each: ``architecture`` reads the nn.Sequential; ``groups`` holds the group actions
(registry ``GROUPS``); ``objectives`` the teleport objectives (registry ``OBJECTIVES``); ``problem``
and ``losses`` the hand-written gradient and Hessian-vector passes; ``search`` the K-step search;
``teleport`` the in-place move, invariance check and record; ``phases`` the profiler labels;
``linalg`` a matrix exponential and a least-squares solver. The maths knows nothing of suites,
files or terminals.
"""

from telebench.symmetry.architecture import Architecture, SymmetryError, parse
from telebench.symmetry.gl_data import GLDataGroup
from telebench.symmetry.group_registry import GROUPS, check_model, get_group
from telebench.symmetry.groups import ExactGroup, Group, LinearGroup, RescaleGroup
from telebench.symmetry.objectives.base import Evaluation, Objective
from telebench.symmetry.objectives.curvature import Curvature
from telebench.symmetry.objectives.grad_norm import GradNorm
from telebench.symmetry.objectives.registry import OBJECTIVES, get_objective
from telebench.symmetry.objectives.sharpness import Sharpness
from telebench.symmetry.problem import Problem
from telebench.symmetry.search import SearchOptions, search
from telebench.symmetry.teleport import LayerTransform, TeleportRecord, teleport

__all__ = [
    "GROUPS",
    "OBJECTIVES",
    "Architecture",
    "Curvature",
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
    "SearchOptions",
    "Sharpness",
    "SymmetryError",
    "TeleportRecord",
    "check_model",
    "get_group",
    "get_objective",
    "parse",
    "search",
    "teleport",
]
