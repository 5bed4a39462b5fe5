"""Optimizer-state transport for the site groups: the rules of docs/state-transport.md on named tensors.

Each site moves a parameter as ``w ↦ K ·ₐ w`` on some axes; the gradient moves by ``K⁻ᵀ`` (covariance of
an exact group), and so is every piece of state built from gradients:

* covector (momentum_buffer, exp_avg, grad_avg): ``X' = K⁻ᵀ ·ₐ X``, exact for every site group;
* second moment (sum, square_avg, exp_avg_sq, max_exp_avg_sq): by ``K⁻ᵀ ⊙ K⁻ᵀ``, exact for the
  diagonal groups (channel-rescale, norm-scale) and for attention elements that are monomial
  (permutations times scales); for general attention elements it assumes uncorrelated gradient
  coordinates, as the MLP rule does;
* normalised (RMSprop's momentum_buffer, a sum of G ⊘ d): unchanged for diagonal sites (exactly),
  ``T_*(N ⊙ d) ⊘ d'`` otherwise;
* counters (step): kept.

The state-kind table mirrors ``telebench.training.transport.STATE_KINDS`` (this layer may not import
training; a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from telebench.errors import UserError
from telebench.symmetry.factors import AppliedElement, applied_factors
from telebench.symmetry.sites import actions
from telebench.symmetry.sites.actions import Element
from telebench.symmetry.sites.site import Site, SiteSet
from telebench.symmetry.sites.teleport import last_sites

COVECTOR, SECOND_MOMENT, NORMALISED, KEEP = "covector", "second-moment", "normalised", "keep"
STATE_KINDS: dict[type[torch.optim.Optimizer], dict[str, str]] = {
    torch.optim.SGD: {"momentum_buffer": COVECTOR},
    torch.optim.Adagrad: {"sum": SECOND_MOMENT, "step": KEEP},
    torch.optim.RMSprop: {"square_avg": SECOND_MOMENT, "grad_avg": COVECTOR, "momentum_buffer": NORMALISED, "step": KEEP},
    torch.optim.Adam: {"exp_avg": COVECTOR, "exp_avg_sq": SECOND_MOMENT, "max_exp_avg_sq": SECOND_MOMENT, "step": KEEP},
}


SiteMove = AppliedElement  # one site's applied element, as TeleportRecord.transforms hold it


def elements_of(sites: SiteSet, transforms: Sequence[SiteMove]) -> list[Element]:
    """The per-site elements (g, g⁻¹) from a record's transforms, in float64."""
    by_index = {t.layer: t for t in transforms}
    if sorted(by_index) != list(range(len(sites.sites))):
        raise ValueError(f"site transport needs one transform per site 0..{len(sites.sites) - 1}, "
                         f"got {sorted(by_index)}.")
    factors = [applied_factors(by_index[i]) for i in range(len(sites.sites))]
    return [actions.from_matrices(s, left.detach().double(), right.detach().double())
            for s, (left, right) in zip(sites.sites, factors, strict=True)]


def _denominator(state: dict[str, Tensor]) -> Tensor:
    v = state["square_avg"].double()
    if "grad_avg" in state:
        v = v - state["grad_avg"].double() ** 2
    return v.clamp_min(0.0).sqrt()


def _one(sites: Sequence[Site], els: Sequence[Element], name: str, kinds: dict[str, str],
         state: dict[str, Tensor]) -> dict[str, Tensor]:
    """New values of one parameter's state entries, computed from the old ones."""
    new: dict[str, Tensor] = {}
    for key, value in state.items():
        if kinds[key] in (COVECTOR, SECOND_MOMENT) and isinstance(value, Tensor):
            moved = actions.move({name: value.double()}, sites, els, covector=True, squared=kinds[key] == SECOND_MOMENT)
            if name in moved:
                new[key] = moved[name]
    diagonal = all(s.diagonal for s in sites if any(a.name == name for a in s.actions))
    for key, value in state.items():
        if kinds[key] == NORMALISED and isinstance(value, Tensor) and not diagonal:
            old_d, new_d = _denominator(state), _denominator({**state, **new})
            num = actions.move({name: value.double() * old_d}, sites, els, covector=True).get(name, value.double() * old_d)
            new[key] = torch.where(new_d > 0, num / new_d.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return new


def transport_site_state(optimizer: torch.optim.Optimizer, model: nn.Module, transforms: Sequence[SiteMove],
                         sites: SiteSet | None = None) -> None:
    """Map ``optimizer``'s state in place through a site teleport of ``model``.

    ``transforms`` is ``TeleportRecord.transforms`` of that teleport (empty: nothing moved, nothing to do);
    ``sites`` the site set it moved along (default: that of the model's last accepted site teleport).
    Raises UserError for an optimizer whose state has no rule, ValueError for transforms that do not fit.
    """
    if not transforms:
        return
    sites = sites if sites is not None else last_sites(model)
    if sites is None:
        raise ValueError(f"{type(model).__name__} has no accepted site teleport to transport the state through.")
    kinds = next((k for cls, k in STATE_KINDS.items() if type(optimizer) is cls), None)
    if kinds is None:
        raise UserError(f"state_policy 'transport' has no rule for {type(optimizer).__name__}; use one of "
                        f"{', '.join(c.__name__ for c in STATE_KINDS)}, or state_policy reset or keep.")
    els = elements_of(sites, transforms)
    names = {id(p): n for n, p in model.named_parameters()}
    for p, state in optimizer.state.items():
        unknown = sorted(set(state) - set(kinds))
        if unknown:
            raise UserError(f"state_policy 'transport' does not know {type(optimizer).__name__}'s state {unknown}; "
                            "use state_policy reset or keep.")
        name = names.get(id(p))
        if name is None:
            raise ValueError(f"the optimizer holds a parameter of shape {tuple(p.shape)} that is not in the model.")
        with torch.no_grad():
            for key, value in _one(sites.sites, els, name, kinds, state).items():
                state[key].copy_(value.to(state[key].dtype))
