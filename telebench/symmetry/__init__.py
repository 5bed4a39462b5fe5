"""Symmetry teleportation for MLPs: exact groups, a cheap search, and honest invariance accounting.

    from telebench.symmetry import teleport
    record = teleport(model, x, y, loss_fn, group="rescale", objective="grad_norm", steps=10, lr=1e-2)

Modules, one job each: ``architecture`` reads the nn.Sequential; ``groups`` holds the group actions
(registry ``GROUPS``); ``objectives`` the teleport objectives (registry ``OBJECTIVES``); ``problem``
and ``losses`` the hand-written gradient and Hessian-vector passes; ``search`` the K-step search
(``covariant`` its exact-group paths, ``gl_search`` and ``gl_kernel`` the fused gl-data step,
``factors`` the vector, dense and low-rank shapes of its per-step factors, ``search_types`` its
options and outcome); ``teleport`` the checked, in-place move and its record (``arguments`` checks
its arguments first), ``acceptance`` the
rule it applies; ``phases`` the profiler labels; ``linalg`` a matrix exponential, its φ
companion and a least-squares solver; ``sites`` the exact symmetries of any
torch.fx-traceable model (CNNs, residual nets, transformers: ``find_symmetries``), on which
``teleport`` acts when the model is not an MLP nn.Sequential. The maths knows nothing of suites,
files or terminals.
"""

from telebench.symmetry.architecture import Architecture, SymmetryError, parse
from telebench.symmetry.gl_data import GLDataGroup
from telebench.symmetry.group_registry import GROUPS, check_model, get_group
from telebench.symmetry.groups import ExactGroup, Group, LinearGroup, RescaleGroup
from telebench.symmetry.objectives.base import Evaluation, Objective
from telebench.symmetry.objectives.curvature import Curvature
from telebench.symmetry.objectives.curvature_reference import CurvatureReference
from telebench.symmetry.objectives.grad_norm import GradNorm
from telebench.symmetry.objectives.registry import OBJECTIVES, get_objective
from telebench.symmetry.objectives.sharpness import Sharpness
from telebench.symmetry.problem import Problem
from telebench.symmetry.search import SearchOptions, search
from telebench.symmetry.sites.discovery import find_symmetries
from telebench.symmetry.sites.site import Refusal, Site, SiteSet
from telebench.symmetry.sites.teleport import SITE_GROUPS
from telebench.symmetry.teleport import LayerTransform, TeleportRecord, teleport

GROUP_NAMES = (*GROUPS, *SITE_GROUPS)  # every group a suite may name: the MLP groups, then the site groups

__all__ = [
    "GROUPS",
    "GROUP_NAMES",
    "OBJECTIVES",
    "Architecture",
    "Curvature",
    "CurvatureReference",
    "Evaluation",
    "ExactGroup",
    "GLDataGroup",
    "GradNorm",
    "Group",
    "LayerTransform",
    "LinearGroup",
    "Objective",
    "Problem",
    "Refusal",
    "RescaleGroup",
    "SearchOptions",
    "Sharpness",
    "Site",
    "SiteSet",
    "SymmetryError",
    "TeleportRecord",
    "check_model",
    "find_symmetries",
    "get_group",
    "get_objective",
    "parse",
    "search",
    "teleport",
]
