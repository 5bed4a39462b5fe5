"""The K-step search on a set of sites, covariant: one gradient of the model, then small algebra.

Every site acts linearly and exactly, so L(g·w) = L(w) for all w and the gradient moves covariantly,
∇L(g·w) = K⁻ᵀ ∇L(w) on every moved axis. A gradient-only objective (``grad_norm``) is therefore known
along the whole group from the gradient at w: each step takes ∂f/∂T at T = 0 in closed form from the
gradient tensors alone (no pass over the batch), steps T = ±lr·∂f/∂T, and moves the gradient by the
exact element exp(T). A teleport costs one gradient here, plus the one its invariance
check takes at the written weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from telebench.symmetry.objectives.base import Objective
from telebench.symmetry.search import SearchOptions
from telebench.symmetry.sites import actions
from telebench.symmetry.sites.actions import Element
from telebench.symmetry.sites.site import Site

LossFn = Any  # (output, targets) -> scalar Tensor


@dataclass
class Batch:
    """The loss on one fixed batch, evaluated on the live model with its RNG and buffers pinned: every
    evaluation draws the same Dropout masks, and BatchNorm's running statistics are left as they were."""

    model: nn.Module
    args: tuple[Any, ...]
    targets: Any
    loss_fn: LossFn
    rng: Tensor
    cuda: list[tuple[torch.device, Tensor]]

    @classmethod
    def of(cls, model: nn.Module, args: tuple[Any, ...], targets: Any, loss_fn: LossFn) -> Batch:
        devices = {p.device for p in model.parameters() if p.device.type == "cuda"}
        return cls(model, args, targets, loss_fn, torch.get_rng_state(),
                   [(d, torch.cuda.get_rng_state(d)) for d in devices])

    def _run(self, grad: bool) -> tuple[Tensor, dict[str, Tensor]]:
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        saved = [(b, b.detach().clone()) for b in self.model.buffers()]
        try:
            with torch.random.fork_rng(devices=[d for d, _ in self.cuda]), torch.set_grad_enabled(grad):
                torch.set_rng_state(self.rng)
                for device, state in self.cuda:
                    torch.cuda.set_rng_state(state, device)
                loss = self.loss_fn(self.model(*self.args), self.targets)
                if not isinstance(loss, Tensor) or loss.dim() != 0:
                    raise ValueError("loss_fn must return a scalar tensor.")
                found = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True) if grad else ()
        finally:
            with torch.no_grad():
                for b, copy in saved:
                    b.copy_(copy)
        grads = {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params, found, strict=False)}
        return loss.detach(), grads

    def loss(self) -> Tensor:
        return self._run(False)[0]

    def gradients(self) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and ∂L/∂p for every trainable parameter, by qualified name."""
        return self._run(True)


def objective_value(objective: Objective, grads: dict[str, Tensor]) -> Tensor:
    return objective.from_gradients([(g, None) for g in grads.values()])


def _objective_gradient(objective: Objective, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    pairs = objective.gradient_wrt_gradients([(g, None) for g in grads.values()])
    return {n: e for n, (e, _) in zip(grads, pairs, strict=True)}


@dataclass
class SiteOutcome:
    elements: list[Element]  # per site, the composed g_K ⋯ g_1 and its inverse
    algebra: list[Tensor]  # Σ_k T_k per site
    steps_taken: int
    loss_before: Tensor
    objective_before: Tensor


def norm(parts: Sequence[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in parts]))


def _step(grad: list[Tensor], settings: SearchOptions) -> list[Tensor]:
    scale: float | Tensor = settings.lr if settings.direction == "increase" else -settings.lr
    if settings.normalize_step:
        n = norm(grad)
        scale = scale / n.clamp_min(torch.finfo(n.dtype).tiny)
    return [scale * d for d in grad]


def _capped(value: Tensor, settings: SearchOptions) -> bool:
    if settings.cap is None:
        return False
    v = float(value)
    return v >= settings.cap if settings.direction == "increase" else v <= settings.cap


def search_sites(batch: Batch, sites: Sequence[Site], objective: Objective, settings: SearchOptions) -> SiteOutcome:
    """Run the K steps from the model's current weights (which it does not modify)."""
    loss, grads = batch.gradients()
    like = next(iter(grads.values()))
    acted = [n for n in dict.fromkeys(a.name for s in sites for a in s.actions if not a.buffer) if n in grads]
    totals = [actions.identity(s, like) for s in sites]
    algebra = [actions.zeros(s, like) for s in sites]
    current = dict(grads)
    before: Tensor | None = None
    taken = 0
    for k in range(settings.steps):
        if k == 0 or settings.cap is not None:
            value = objective_value(objective, current)
            before = value if before is None else before
            if _capped(value, settings):
                break
        dgrads = _objective_gradient(objective, current)
        t = _step(actions.algebra_gradient(sites, {n: current[n] for n in acted}, dgrads, like), settings)
        els = actions.elements(sites, t, settings.parametrization)
        with torch.no_grad():
            current.update(actions.move({n: current[n] for n in acted}, sites, els, covector=True))
        totals = [actions.compose(s, e, tot) for s, e, tot in zip(sites, els, totals, strict=True)]
        algebra = [a + x for a, x in zip(algebra, t, strict=True)]
        taken += 1
    if before is None:
        before = objective_value(objective, current)
    return SiteOutcome(totals, algebra, taken, loss, before.detach())


def random_sites(batch: Batch, sites: Sequence[Site], objective: Objective, settings: SearchOptions,
                 scale: float | None, generator: torch.Generator | None) -> SiteOutcome:
    """The control arm: one element along an isotropic random direction of the joint algebra, with the
    size ``‖Σ_k T_k‖`` an optimising search would move from here (a dry run), or norm ``scale``."""
    if scale is None:
        dry = search_sites(batch, sites, objective, settings)
        size: float | Tensor = norm(dry.algebra)
        loss, before = dry.loss_before, dry.objective_before
    else:
        size = scale
        loss, grads = batch.gradients()
        before = objective_value(objective, grads).detach()
    like = next(p for p in batch.model.parameters() if p.is_floating_point())
    direction = [actions.sample(s, like.detach(), generator) for s in sites]
    factor = size / norm(direction)
    algebra = [factor * d for d in direction]
    els = [actions.element(s, t, settings.parametrization) for s, t in zip(sites, algebra, strict=True)]
    return SiteOutcome(els, algebra, 1, loss, before)
