"""The symmetry groups by name, and the one check that a model fits a group."""

from __future__ import annotations

from torch import nn

from telebench.symmetry.architecture import Architecture, parse
from telebench.symmetry.gl_data import GLDataGroup
from telebench.symmetry.groups import Group, LinearGroup, RescaleGroup

GROUPS: dict[str, type[Group]] = {
    RescaleGroup.name: RescaleGroup,
    LinearGroup.name: LinearGroup,
    GLDataGroup.name: GLDataGroup,
}


def get_group(group: str | Group) -> Group:
    """A group instance from its registry name (an instance passes through)."""
    if isinstance(group, Group):
        return group
    try:
        return GROUPS[group]()
    except KeyError:
        raise ValueError(f"unknown symmetry group {group!r}; choose one of {sorted(GROUPS)}.") from None


def check_model(model: nn.Module, group: str | Group) -> Architecture:
    """Read ``model`` and check that ``group`` can act on it; raise SymmetryError naming the layer if not."""
    grp = get_group(group)
    arch = parse(model)
    grp.check(arch)
    return arch


