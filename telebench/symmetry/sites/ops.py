"""What each torch op does to a moved tensor, by category: the tables the propagation rules read."""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

MOVEMENT, CAST, META, HOMOGENEOUS, POOL, ADD, MUL, DIV, NEG, REDUCE, MAX_REDUCE, MATMUL, SDPA = (
    "movement", "cast", "meta", "homogeneous", "pool", "add", "mul", "div", "neg", "reduce", "max-reduce",
    "matmul", "sdpa")

_FUNCTIONS: dict[Any, str] = {
    **dict.fromkeys((torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.unsqueeze, torch.squeeze,
                     torch.chunk, torch.split, torch.t, torch.movedim, torch.swapaxes, torch.swapdims, torch.narrow,
                     torch.unbind, torch.select, torch.cat, torch.concat, torch.concatenate, torch.stack,
                     operator.getitem), MOVEMENT),
    **dict.fromkeys((F.relu, torch.relu, F.leaky_relu, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d), HOMOGENEOUS),
    **dict.fromkeys((operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub), ADD),
    **dict.fromkeys((operator.mul, operator.imul, torch.mul), MUL),
    **dict.fromkeys((operator.truediv, operator.itruediv, torch.div, torch.true_divide), DIV),
    **dict.fromkeys((operator.neg, torch.neg), NEG),
    **dict.fromkeys((torch.sum, torch.mean), REDUCE),
    torch.amax: MAX_REDUCE,
    **dict.fromkeys((operator.matmul, torch.matmul, torch.bmm), MATMUL),
    F.scaled_dot_product_attention: SDPA,
    **dict.fromkeys((builtins.len, torch.ones_like, torch.zeros_like, torch.empty_like, torch.full_like), META),
}
_METHODS: dict[str, str] = {
    **dict.fromkeys(("view", "reshape", "permute", "transpose", "flatten", "unflatten", "contiguous", "unsqueeze",
                     "squeeze", "expand", "expand_as", "view_as", "reshape_as", "chunk", "split", "t", "clone",
                     "narrow", "unbind", "select", "movedim", "swapaxes", "swapdims", "repeat"), MOVEMENT),
    **dict.fromkeys(("to", "float", "double", "half", "bfloat16", "type_as"), CAST),
    **dict.fromkeys(("size", "dim", "numel", "stride", "get_device", "is_contiguous", "nelement", "new_ones",
                     "new_zeros", "new_full", "new_empty"), META),
    **dict.fromkeys(("relu", "relu_"), HOMOGENEOUS),
    **dict.fromkeys(("add", "add_", "sub", "sub_"), ADD),
    **dict.fromkeys(("mul", "mul_"), MUL),
    **dict.fromkeys(("div", "div_"), DIV),
    "neg": NEG,
    **dict.fromkeys(("sum", "mean"), REDUCE),
    "amax": MAX_REDUCE,
    **dict.fromkeys(("matmul", "bmm"), MATMUL),
}
_POOL_FUNCTIONS: dict[Any, int] = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
    F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
}
POOL_MODULES: dict[type[nn.Module], int] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}
HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
"""Positively homogeneous and per-position: f(s·x) = s·f(x) for s > 0 (Dropout: with the same mask)."""
MOVEMENT_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity)
CONSUMERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Modules whose weight columns can absorb a move of their input channels."""
PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)
"""Modules whose output channels a diagonal site can scale (weight rows and bias; a norm's affine gain)."""
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_META_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}
_MOVEMENT_ATTRIBUTES = {"T", "mT"}


def category(node: fx.Node) -> str | None:
    """The category of a call_function or call_method node (None: unknown)."""
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    if node.op != "call_function":
        return None
    if node.target is builtins.getattr and len(node.args) > 1:
        attr = node.args[1]
        return META if attr in _META_ATTRIBUTES else MOVEMENT if attr in _MOVEMENT_ATTRIBUTES else None
    if node.target in _POOL_FUNCTIONS:
        return POOL
    return _FUNCTIONS.get(node.target)


def pool_rank(node: fx.Node, module: nn.Module | None) -> int:
    if module is not None:
        return POOL_MODULES[type(module)]
    return _POOL_FUNCTIONS[node.target]


def conv_rank(module: nn.Module) -> int:
    ranks: dict[type[nn.Module], int] = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
    return ranks.get(type(module), 0)


def is_contraction(node: fx.Node) -> bool:
    return category(node) in (MATMUL, SDPA)

GETITEM_FN = operator.getitem
