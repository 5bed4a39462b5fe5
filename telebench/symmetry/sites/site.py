"""The plain data of a symmetry site: what a group element acts on, by qualified name.

Every site is a group acting linearly on a few axes of a few named tensors. Along one axis of one
tensor, the positions carry *codes*: ``-1`` (not acted on), ``c >= 0`` (site coordinate c, moved by g)
or ``c <= -2`` (coordinate ``-c - 2``, moved by g⁻ᵀ). The site's element is

* diagonal (channel-rescale, norm-scale): a vector s > 0 over its coordinates, g = diag(s);
* matrix (attention): one d × d block per head, coordinates ``h·d + p`` (head h, component p).

A tensor moves as ``x ↦ K ·ₐ x`` (K contracted with axis a), with K built from g (or g⁻ᵀ) by the codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

CHANNEL_RESCALE, NORM_SCALE, ATTENTION_QK, ATTENTION_VO = "channel-rescale", "norm-scale", "attention-qk", "attention-vo"
KINDS = (CHANNEL_RESCALE, NORM_SCALE, ATTENTION_QK, ATTENTION_VO)
GROUP_KINDS: dict[str, tuple[str, ...]] = {
    "channel-rescale": (CHANNEL_RESCALE,),
    "norm-scale": (NORM_SCALE,),
    "attention": (ATTENTION_QK, ATTENTION_VO),
    "auto": KINDS,
}
"""Each site group by name, and the site kinds it composes."""


@dataclass(frozen=True)
class TensorAction:
    """One axis of one parameter or buffer, moved by the site: ``x ↦ (K ·ₐ x)`` (``power`` 2: by K⊙K,
    as BatchNorm's running variance moves; diagonal sites only)."""

    name: str  # qualified name in the model (a parameter, or a buffer when ``buffer``)
    axis: int
    codes: Tensor  # long, one code per position along ``axis``
    buffer: bool = False
    power: int = 1


@dataclass(frozen=True)
class EpsAction:
    """A normalisation whose ``eps`` scales with the square of the factor of coordinate ``code``:
    ``eps ↦ f² eps`` keeps ``(x − μ)/√(σ² + eps)`` exact when its input is scaled by f."""

    module: str
    code: int


@dataclass(frozen=True)
class Site:
    """One exact symmetry of the model: its kind, where it acts, and the size of its group."""

    kind: str
    node: str  # the torch.fx node that names the site (the producer, or the score contraction)
    modules: tuple[str, ...]  # every module whose tensors or eps move
    size: int  # coordinates: channels (diagonal) or heads × d_head (matrix)
    block: int  # 1 (diagonal) or d_head
    actions: tuple[TensorAction, ...]
    eps: tuple[EpsAction, ...] = ()

    @property
    def diagonal(self) -> bool:
        return self.kind in (CHANNEL_RESCALE, NORM_SCALE)

    @property
    def heads(self) -> int:
        return self.size // self.block

    @property
    def dim(self) -> int:
        """The group's dimension: channels for a diagonal site, heads × d_head² for attention."""
        return self.size if self.diagonal else self.size * self.block

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.name for a in self.actions if not a.buffer))

    @property
    def buffers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.name for a in self.actions if a.buffer))

    def describe(self) -> str:
        shape = f"{self.size} channel(s)" if self.diagonal else f"{self.heads} head(s) × GL({self.block})"
        return f"{self.kind} at node {self.node!r} on {', '.join(self.modules)}: {shape}, dimension {self.dim}"


@dataclass(frozen=True)
class Refusal:
    """A near-miss: a place a group could have acted, and the node and reason it does not."""

    kind: str
    node: str
    modules: tuple[str, ...]
    reason: str

    def describe(self) -> str:
        return f"{self.kind} of {', '.join(self.modules)} refused at node {self.node!r}: {self.reason}"


@dataclass(frozen=True)
class SiteSet:
    """What :func:`telebench.symmetry.find_symmetries` found: the exact sites and the near-misses."""

    group: str
    sites: tuple[Site, ...]
    refused: tuple[Refusal, ...] = field(default=())

    @property
    def dim(self) -> int:
        return sum(s.dim for s in self.sites)

    def of_kind(self, *kinds: str) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.kind in kinds)

    def describe(self) -> str:
        lines = [f"{len(self.sites)} site(s) for group {self.group!r}, dimension {self.dim}:"]
        lines += [f"  {s.describe()}" for s in self.sites]
        lines += [f"  {r.describe()}" for r in self.refused]
        return "\n".join(lines)
