"""Model families beyond the MLP: a small CNN, a small ResNet with BatchNorm, a pre-norm transformer, and
``factory`` for a user's own model. Ordinary nn.Module subclasses with their own forward; the symmetry
package reads their exact symmetries from the torch.fx graph (docs/real-models.md).

``build_model({"family": "cnn", "channels": [8, 16]}, seed=0, device="cpu")`` builds one; every family's
keyword arguments are its constructor's. Initialisation is PyTorch's default, drawn under a forked RNG
seeded with ``seed``, so the caller's random stream is untouched and a seed gives the same weights.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.errors import UserError
from telebench.training.models import build_mlp
from telebench.training.specs import ModelSpec, Params


class CNN(nn.Module):
    """Conv3×3 → [BatchNorm] → ReLU → MaxPool2d(2) per stage, then Flatten → Linear → ReLU → Dropout → Linear."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, channels: Sequence[int] = (16, 32),
                 hidden: int = 64, n_classes: int = 10, dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        if image_size % (2 ** len(channels)):
            raise UserError(f"cnn image_size {image_size} must be divisible by 2^{len(channels)} (one pooling per stage).")
        widths = [in_channels, *channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=not batch_norm) for a, b in zip(
            widths[:-1], widths[1:], strict=True))
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) if batch_norm else nn.Identity() for c in channels)
        self.pool = nn.MaxPool2d(2)
        side = image_size // 2 ** len(channels)
        self.fc1 = nn.Linear(widths[-1] * side * side, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = self.pool(F.relu(norm(conv(x))))
        x = torch.flatten(x, 1)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the shortcut a 1×1 conv + BN when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv (stride ``stem_stride``) + BN + ReLU, stages of BasicBlocks (stride 2 from the second),
    global average pool, Linear."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32), blocks: int = 1,
                 n_classes: int = 10, stem_stride: int = 1) -> None:
        super().__init__()
        # stem_stride 2 halves the image first, as ImageNet ResNets do: a quarter of the work per block
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(c, w, stride=2 if i > 0 and j == 0 else 1))
                c = w
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _causal_mask(x: Tensor) -> Tensor:
    """For x of shape (batch, seq, ·): True above the diagonal, position i may not attend to j > i (built
    from x per call, so torch.fx traces it)."""
    return x.new_ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)


class SelfAttention(nn.Module):
    """Hand-written multi-head self-attention: q, k, v, o Linears and a head reshape (optionally causal)."""

    def __init__(self, d_model: int, heads: int, causal: bool, max_len: int) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, t, e = x.shape
        d = e // self.heads
        q = self.q(x).view(b, t, self.heads, d).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, d).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, d).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)
        if self.causal:
            scores = scores.masked_fill(_causal_mask(x), float("-inf"))
        out = scores.softmax(-1) @ v
        return self.o(out.transpose(1, 2).reshape(b, t, e))


class MHASelfAttention(nn.Module):
    """nn.MultiheadAttention as self-attention (batch first, optionally causal)."""

    def __init__(self, d_model: int, heads: int, causal: bool, max_len: int) -> None:
        super().__init__()
        self.causal = causal
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        mask = _causal_mask(x) if self.causal else None
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(LN(x)), then x + W₂ ReLU(W₁ LN(x))."""

    def __init__(self, d_model: int, heads: int, d_ff: int, attention: str, causal: bool, max_len: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        kinds: dict[str, type[nn.Module]] = {"manual": SelfAttention, "mha": MHASelfAttention}
        if attention not in kinds:
            raise UserError(f"transformer attention {attention!r} is unknown; use one of {', '.join(kinds)}.")
        self.attn = kinds[attention](d_model, heads, causal, max_len)
        self.ff1, self.ff2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ff2(F.relu(self.ff1(self.ln2(x))))


class Transformer(nn.Module):
    """Token and learned position embeddings, pre-norm blocks, a final LayerNorm, a Linear head on the
    last position (``pool: last``) or the mean over positions (``mean``). Inputs: token ids (batch, seq)."""

    def __init__(self, vocab: int = 16, seq_len: int = 8, d_model: int = 32, heads: int = 4, layers: int = 2,
                 d_ff: int = 64, n_classes: int = 16, attention: str = "manual", causal: bool = False,
                 pool: str = "last") -> None:
        super().__init__()
        if d_model % heads:
            raise UserError(f"transformer d_model {d_model} must be divisible by heads {heads}.")
        if pool not in ("last", "mean"):
            raise UserError(f"transformer pool {pool!r} is unknown; use 'last' or 'mean'.")
        self.pool = pool
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(1, seq_len, d_model) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(d_model, heads, d_ff, attention, causal, seq_len)
                                      for _ in range(layers)))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        x = self.ln(self.blocks(x))
        return self.head(x[:, -1] if self.pool == "last" else x.mean(1))


FAMILIES: dict[str, type[nn.Module]] = {"cnn": CNN, "resnet": ResNet, "transformer": Transformer}


def factory(target: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A user's model from ``"package.module:function"`` (a function or class) called with ``kwargs``."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UserError(f"model factory {target!r} must read 'package.module:function'.")
    try:
        fn: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"model factory {target!r} cannot be loaded: {exc}.") from None
    try:
        model = fn(**(kwargs or {}))
    except TypeError as exc:
        raise UserError(f"model factory {target!r} rejected its kwargs {sorted(kwargs or {})}: {exc}.") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model factory {target!r} returned a {type(model).__name__}, not an nn.Module.")
    return model


def _construct(family: str, kwargs: dict[str, Any]) -> nn.Module:
    if family == "factory":
        unknown = sorted(set(kwargs) - {"target", "kwargs"})
        if "target" not in kwargs or unknown:
            raise UserError(f"model family 'factory' takes 'target' and 'kwargs'{f', not {unknown}' if unknown else ''}.")
        return factory(kwargs["target"], kwargs.get("kwargs"))
    if family not in FAMILIES:
        raise UserError(f"model family {family!r} is unknown; use one of {', '.join([*FAMILIES, 'factory'])}.")
    cls = FAMILIES[family]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise UserError(f"model family {family!r} does not take {unknown}; it takes {', '.join(allowed)}.")
    return cls(**kwargs)


def build_model(spec: dict[str, Any], seed: int | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model ``spec`` names: ``{"family": "cnn" | "resnet" | "transformer", **constructor kwargs}`` or
    ``{"family": "factory", "target": "pkg.mod:fn", "kwargs": {...}}``, built under a forked RNG seeded
    with ``seed`` (None: the global RNG), then moved to ``device`` and ``dtype``."""
    kwargs = dict(spec)
    family = kwargs.pop("family", None)
    if not isinstance(family, str):
        raise UserError(f"a model spec needs a 'family' (one of {', '.join([*FAMILIES, 'factory'])}), got {spec!r}.")
    if seed is None:
        model = _construct(family, kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _construct(family, kwargs)
    return model.to(device=device, dtype=dtype)


def data_kwargs(family: str, inputs: dict[str, Any], n_outputs: int) -> dict[str, Any]:
    """The constructor arguments a built-in family takes from its dataset (channels, image size, vocabulary,
    sequence length, classes), so a suite names only the architecture; a suite's own values win."""
    if family in ("cnn", "resnet") and inputs.get("kind") == "image":
        channels, height, width = inputs["shape"]
        found: dict[str, Any] = {"in_channels": channels, "n_classes": n_outputs}
        if family == "cnn":
            found["image_size"] = height if height == width else None
        return {k: v for k, v in found.items() if v is not None}
    if family == "transformer" and inputs.get("kind") == "tokens":
        return {"vocab": inputs["vocab"], "seq_len": inputs["length"], "n_classes": n_outputs}
    return {}


def build_from_spec(spec: ModelSpec, seed: int | None = None, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model a trial spec names: an MLP nn.Sequential, or a family built from its resolved kwargs."""
    if spec.is_mlp:
        return build_mlp(spec, seed=seed, device=device, dtype=dtype)
    kwargs = thaw_deep(spec.kwargs)
    if spec.family == "factory":
        return build_model({"family": "factory", "target": kwargs.pop("target"), "kwargs": kwargs.get("kwargs", {})},
                           seed=seed, device=device, dtype=dtype)
    return build_model({"family": spec.family, **kwargs}, seed=seed, device=device, dtype=dtype)


def thaw_deep(params: Params) -> dict[str, Any]:
    """Inverse of :func:`telebench.training.specs.freeze` for the kwargs of a model: nested pairs become dicts,
    other tuples lists (a constructor gets ``channels=[8, 16]`` and ``kwargs={...}`` as written)."""

    def _t(v: Any) -> Any:
        if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)
                                              for x in v):
            return {k: _t(x) for k, x in v}
        if isinstance(v, tuple):
            return [_t(x) for x in v]
        return v

    return {k: _t(v) for k, v in params}
