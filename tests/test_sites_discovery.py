"""find_symmetries on hand-built models: the sites it should find, and each near-miss refused with the
node that breaks the group and why."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.symmetry import SymmetryError, find_symmetries
from telebench.symmetry.sites.site import (
    ATTENTION_QK,
    ATTENTION_VO,
    CHANNEL_RESCALE,
    Refusal,
    SiteSet,
)


def _sites(found: SiteSet, kind: str) -> dict[str, tuple[str, ...]]:
    return {s.node: s.modules for s in found.sites if s.kind == kind}


def _refusal(found: SiteSet, kind: str, module: str) -> Refusal:
    return next(r for r in found.refused if r.kind == kind and module in r.modules)


class Conv1dNet(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(2, 3, 3), nn.Conv1d(3, 4, 3)
        self.act, self.pool, self.flat = act, nn.AvgPool1d(2), nn.Flatten()
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * 3, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.act(self.c1(x)))
        return self.fc(self.drop(self.flat(F.leaky_relu(self.c2(x), 0.2))))


def test_channel_rescale_through_activation_pooling_flatten_and_dropout() -> None:
    found = find_symmetries(Conv1dNet(nn.ReLU()), torch.randn(3, 2, 12))
    assert _sites(found, CHANNEL_RESCALE) == {"c1": ("c1", "c2"), "c2": ("c2", "fc")}
    site = next(s for s in found.sites if s.node == "c2")
    assert site.dim == 4 and site.parameters == ("c2.weight", "c2.bias", "fc.weight")
    fc = next(a for a in site.actions if a.name == "fc.weight")
    assert fc.axis == 1 and fc.codes.tolist() == [-2] * 3 + [-3] * 3 + [-4] * 3 + [-5] * 3  # channel k: 3 features


def test_a_non_homogeneous_activation_refuses_rescale_at_its_node() -> None:
    found = find_symmetries(Conv1dNet(nn.GELU()), torch.randn(3, 2, 12))
    assert "c1" not in _sites(found, CHANNEL_RESCALE)
    refusal = _refusal(found, CHANNEL_RESCALE, "c1")
    assert refusal.node == "act" and "GELU" in refusal.reason


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner, self.outer, self.head = nn.Linear(4, 6), nn.Linear(6, 4), nn.Linear(4, 2)
        self.stem = nn.Linear(3, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        x = x + self.outer(F.relu(self.inner(x)))
        return self.head(x)


def test_rescale_is_exact_inside_a_residual_branch_and_refused_across_the_skip() -> None:
    found = find_symmetries(Residual(), torch.randn(2, 3))
    assert _sites(found, CHANNEL_RESCALE) == {"inner": ("inner", "outer")}
    for module in ("stem", "outer"):
        refusal = _refusal(found, CHANNEL_RESCALE, module)
        assert refusal.node == "add" and "skip connection" in refusal.reason


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(F.relu(self.a(F.relu(self.a(x)))))


def test_a_module_used_twice_is_refused_naming_its_calls() -> None:
    found = find_symmetries(Twice(), torch.randn(2, 3))
    assert not found.sites
    refusal = _refusal(found, CHANNEL_RESCALE, "a")
    assert "called 2 times" in refusal.reason and "'a'" in refusal.reason and "'a_1'" in refusal.reason


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.hidden = nn.Embedding(5, 4), nn.Linear(4, 4)
        self.out = nn.Linear(4, 5, bias=False)
        self.mid = nn.Linear(4, 4)
        self.out.weight = self.embed.weight

    def forward(self, t: Tensor) -> Tensor:
        return self.out(self.mid(F.relu(self.hidden(self.embed(t)))))


def test_tied_weights_are_refused() -> None:
    found = find_symmetries(Tied(), torch.randint(0, 5, (2, 3)))
    assert _sites(found, CHANNEL_RESCALE) == {"hidden": ("hidden", "mid")}
    refusal = _refusal(found, CHANNEL_RESCALE, "mid")
    assert "tied" in refusal.reason and "embed.weight" in refusal.reason and refusal.node == "mid"


class DirectRead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(F.relu(self.a(x))) + self.b.weight.sum()


def test_a_parameter_read_outside_its_module_is_refused() -> None:
    found = find_symmetries(DirectRead(), torch.randn(2, 3))
    assert "read directly" in _refusal(found, CHANNEL_RESCALE, "b").reason


class BNNet(nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, eps=eps)
        self.fc = nn.Linear(3, 2)
        self.ln_in, self.ln = nn.Linear(3, 5), nn.LayerNorm(5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1)
        return self.fc(x) + self.out(self.ln(self.ln_in(x)))


@pytest.mark.parametrize("eps, dim", [(1e-5, 1), (0.0, 3)])
def test_norm_scale_moves_running_statistics_and_eps(eps: float, dim: int) -> None:
    model = BNNet(eps).train(eps != 0)  # torch allows eps = 0 in eval mode only
    found = find_symmetries(model, torch.randn(4, 2, 5, 5), "norm-scale")
    sites = {s.node: s for s in found.sites}
    assert set(sites) == {"conv", "ln_in"}
    bn = sites["conv"]
    assert bn.dim == dim  # one scale shared by every channel, or per channel when eps = 0
    assert bn.buffers == ("bn.running_mean", "bn.running_var")
    assert [e.module for e in bn.eps] == ([] if eps == 0 else ["bn"])
    assert sites["ln_in"].dim == 1 and [e.module for e in sites["ln_in"].eps] == ["ln"]
    auto = find_symmetries(model, torch.randn(4, 2, 5, 5))
    assert _sites(auto, CHANNEL_RESCALE) == {"bn": ("bn", "fc", "ln_in"), "ln": ("ln", "out")}  # a norm's gain, its readers


def test_norm_scale_needs_one_producer() -> None:
    found = find_symmetries(Residual(), torch.randn(2, 3), "norm-scale")
    assert not found.sites


class Attention(nn.Module):
    """Hand-written self-attention; ``rope`` rotates q and k by position (rotary embedding)."""

    def __init__(self, e: int = 8, h: int = 2, rope: bool = False, packed: bool = False) -> None:
        super().__init__()
        self.h, self.rope, self.packed = h, rope, packed
        self.qkv = nn.Linear(e, 3 * e)
        self.q, self.k, self.v, self.o = (nn.Linear(e, e) for _ in range(4))
        t = torch.arange(4)[:, None] * torch.arange(e // h // 2)[None]
        self.register_buffer("cos", torch.cat([t.cos(), t.cos()], -1))
        self.register_buffer("sin", torch.cat([t.sin(), t.sin()], -1))

    def forward(self, x: Tensor) -> Tensor:
        b, t, e = x.shape
        if self.packed:
            q, k, v = self.qkv(x).split(e, dim=2)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = (u.view(b, t, self.h, e // self.h).transpose(1, 2) for u in (q, k, v))
        if self.rope:
            cos, sin, half = self.get_buffer("cos"), self.get_buffer("sin"), e // self.h // 2
            q = q * cos + torch.cat([-q[..., half:], q[..., :half]], -1) * sin
            k = k * cos + torch.cat([-k[..., half:], k[..., :half]], -1) * sin
        att = (q @ k.transpose(-2, -1) / math.sqrt(e // self.h)).softmax(-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, t, e)).sum(1)


@pytest.mark.parametrize("packed", [False, True])
def test_hand_written_attention_is_found_per_head(packed: bool) -> None:
    found = find_symmetries(Attention(packed=packed), torch.randn(2, 4, 8), "attention")
    qk, vo = found.of_kind(ATTENTION_QK), found.of_kind(ATTENTION_VO)
    assert len(qk) == len(vo) == 1
    assert (qk[0].heads, qk[0].block, qk[0].dim) == (2, 4, 32)
    assert qk[0].modules == (("qkv",) if packed else ("q", "k"))
    assert vo[0].modules == (("qkv", "o") if packed else ("v", "o"))


def test_rope_refuses_the_query_key_group_at_the_rotation() -> None:
    found = find_symmetries(Attention(rope=True), torch.randn(2, 4, 8), "attention")
    assert not found.of_kind(ATTENTION_QK) and len(found.of_kind(ATTENTION_VO)) == 1
    refusal = next(r for r in found.refused if r.kind == ATTENTION_QK)
    assert refusal.node.startswith("mul") and "rotary" in refusal.reason


def test_multihead_attention_modules() -> None:
    class Model(nn.Module):
        def __init__(self, bias_kv: bool) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=bias_kv)

        def forward(self, x: Tensor) -> Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    found = find_symmetries(Model(False), torch.randn(2, 3, 8), "attention")
    assert [s.kind for s in found.sites] == [ATTENTION_QK, ATTENTION_VO]
    assert found.sites[1].parameters == ("attn.out_proj.weight", "attn.in_proj_weight", "attn.in_proj_bias")
    refused = find_symmetries(Model(True), torch.randn(2, 3, 8), "attention")
    assert not refused.sites and "add_bias_kv" in refused.refused[0].reason


def test_grouped_convolutions_are_refused() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 1, groups=2)

        def forward(self, x: Tensor) -> Tensor:
            return self.b(F.relu(self.a(x)))

    found = find_symmetries(Model(), torch.randn(2, 2, 3, 3))
    assert not found.sites and "grouped" in _refusal(found, CHANNEL_RESCALE, "a").reason


def test_an_untraceable_model_is_a_symmetry_error_with_the_reason() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(SymmetryError, match="torch.fx cannot trace Dynamic"):
        find_symmetries(Dynamic(), torch.randn(2, 3))


def test_mlp_only_groups_say_so() -> None:
    with pytest.raises(SymmetryError, match="gl-data' is MLP-only"):
        find_symmetries(Residual(), torch.randn(2, 3), "gl-data")
    with pytest.raises(SymmetryError, match="linear MLPs"):
        find_symmetries(Residual(), torch.randn(2, 3), "linear")
    with pytest.raises(ValueError, match="unknown symmetry group"):
        find_symmetries(Residual(), torch.randn(2, 3), "rotation")


def test_discovery_leaves_running_statistics_and_the_rng_alone() -> None:
    model = BNNet(1e-5).train()
    x = torch.randn(4, 2, 5, 5)
    before = [b.clone() for b in model.buffers()]
    state = torch.get_rng_state()
    find_symmetries(model, x)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))
