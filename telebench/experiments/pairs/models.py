"""A train case's model beyond the MLP: what its dataset gives it, whether it builds, and where it can teleport.

A CNN, ResNet, transformer or a user's own `factory` model is built once at validation, on the CPU, so a
suite that names a missing constructor argument, a model that torch.fx cannot trace or a group with no
exact site in the model fails before any training, with the key to fix; `telebench list` shows the sites
and group dimension each case will teleport along (docs/real-models.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from telebench.config import registry
from telebench.errors import UserError
from telebench.experiments.pairs.schema import Case
from telebench.training.specs import DatasetSpec, ModelSpec, freeze, thaw

FAMILY_INPUTS = {"mlp": "flat", "cnn": "image", "resnet": "image", "transformer": "tokens"}
MLP_KEYS = ("widths", "activation", "negative_slope", "bias")
SITE_GROUPS = ("channel-rescale", "norm-scale", "attention", "auto")
MLP_ONLY_GROUPS = ("gl-data", "linear")


@dataclass(frozen=True)
class ModelInfo:
    """What one build of the model says: its size, and per group the exact sites it teleports along."""

    parameters: int
    activations_per_sample: int  # numbers every module outputs for one input row (for the memory estimate)
    sites: tuple[tuple[str, int, int, str], ...] = ()  # (group, sites, dimension, kinds) per group asked about


def model_spec(case: Case) -> ModelSpec:
    """The plain-data model of a resolved case (its data-derived kwargs already filled in)."""
    m = case.model
    if m.kind == "mlp":
        assert m.widths is not None
        return ModelSpec(widths=tuple(m.widths), activation=m.activation, negative_slope=m.negative_slope,
                         bias=m.bias)
    kwargs = dict(m.kwargs)
    if m.factory is not None:
        kwargs = {"target": m.factory, "kwargs": kwargs}
    return ModelSpec(family=m.kind, kwargs=freeze(kwargs), inputs=str(m.inputs))


def resolve_model(source: str, case: Case, key: Callable[..., str], groups: list[tuple[str, str]]) -> ModelInfo:
    """Fill a non-MLP case's `inputs` and data-derived kwargs, build the model once and check each teleport
    group `(group, key of the group)` against its sites; one UserError naming the key on any problem."""
    m = case.model
    stray = [k for k in MLP_KEYS if k in m.model_fields_set]
    if stray:
        raise UserError(f"{source}: {key('model', stray[0])}: belongs to an MLP, but the model is family "
                        f"{m.kind!r}; remove it (a case that sets `family` still inherits defaults.model keys).")
    inputs = registry.dataset_inputs(case.dataset.name, case.dataset.params)
    shape = registry.dataset_shape(case.dataset.name, case.dataset.params)
    n_out = shape[1] if shape else 0
    wanted = m.inputs or FAMILY_INPUTS.get(m.kind) or ("tokens" if inputs["kind"] == "tokens" else "flat")
    have = "flat" if inputs["kind"] == "features" else inputs["kind"]
    if wanted != have and not (wanted == "flat" and have == "image"):
        raise UserError(f"{source}: {key('model', 'inputs')}: model family {m.kind!r} takes {wanted} inputs but "
                        f"dataset {case.dataset.name!r} gives {have} rows; pick a dataset or model that match.")
    m.inputs = wanted  # type: ignore[assignment]
    if m.factory is None:
        from telebench.training.model_families import data_kwargs

        m.kwargs = {**data_kwargs(m.kind, inputs, n_out), **m.kwargs}
    return _checked_info(source, case, groups, key("model"))


def check_mlp_groups(source: str, case: Case, groups: list[tuple[str, str]]) -> None:
    """An MLP teleporting along a site group (channel-rescale, norm-scale, attention, auto) must have a site."""
    site_groups = [(g, k) for g, k in groups if g in SITE_GROUPS]
    if site_groups:
        _checked_info(source, case, site_groups, None)


def _checked_info(source: str, case: Case, groups: list[tuple[str, str]], model_key: str | None) -> ModelInfo:
    """`model_info` of the case for `groups`; a group without a site is an error at that group's key, and,
    with `model_key`, a model that does not build or run an error at the model's key."""
    data = DatasetSpec(case.dataset.name, freeze(case.dataset.params))
    try:
        return model_info(model_spec(case), data, tuple(dict.fromkeys(g for g, _ in groups)))
    except _GroupError as exc:
        group_key = next(k for g, k in groups if g == exc.group)
        raise UserError(f"{source}: {group_key}: {exc.reason}") from None
    except UserError as exc:
        if model_key is None:
            raise
        raise UserError(f"{source}: {model_key}: {str(exc).rstrip('.')}.") from None


class _GroupError(Exception):
    def __init__(self, group: str, reason: str) -> None:
        super().__init__(reason)
        self.group, self.reason = group, reason


def example_inputs(spec: ModelSpec, data: DatasetSpec, rows: int = 2) -> Any:
    """A seeded batch of `rows` inputs shaped as the model receives them (features, images or token ids)."""
    import torch

    inputs = registry.dataset_inputs(data.name, thaw(data.params))
    generator = torch.Generator().manual_seed(0)
    if spec.inputs == "tokens":
        return torch.randint(0, inputs["vocab"], (rows, inputs["length"]), generator=generator)
    if spec.inputs == "image":
        return torch.rand(rows, *inputs["shape"], generator=generator)
    shape = registry.dataset_shape(data.name, thaw(data.params))
    assert shape is not None
    return torch.rand(rows, shape[0], generator=generator)


@lru_cache(maxsize=64)
def model_info(spec: ModelSpec, data: DatasetSpec, groups: tuple[str, ...] = ()) -> ModelInfo:
    """Build `spec` once on the CPU (seed 0), count it, run it on two example rows, and find its sites."""
    import torch

    from telebench.training.model_families import build_from_spec

    model = build_from_spec(spec, seed=0)
    x = example_inputs(spec, data)
    outputs = 0

    def count(_module: Any, _args: Any, out: Any) -> None:
        nonlocal outputs
        if isinstance(out, torch.Tensor):
            outputs += out.numel()

    hooks = [mod.register_forward_hook(count) for mod in model.modules() if not list(mod.children())]
    try:
        with torch.no_grad():
            model(x)
    except Exception as exc:  # the user's model: any failure is theirs to see, in one sentence
        raise UserError(f"the model cannot run on inputs of shape {tuple(x.shape)}: {type(exc).__name__}: {exc}") \
            from None
    finally:
        for h in hooks:
            h.remove()
    found = tuple(_sites(model, x, group) for group in groups)
    n_params = sum(p.numel() for p in model.parameters())
    return ModelInfo(n_params, outputs // len(x), found)


def _sites(model: Any, x: Any, group: str) -> tuple[str, int, int, str]:
    from telebench.symmetry import SymmetryError, find_symmetries

    if group in MLP_ONLY_GROUPS:
        raise _GroupError(group, f"group {group!r} acts on MLP nn.Sequential models only; use channel-rescale, "
                                 "norm-scale, attention or auto for this model")
    try:
        sites = find_symmetries(model, x, group)
    except (SymmetryError, ValueError) as exc:
        raise _GroupError(group, f"{str(exc).rstrip('.')}") from None
    if not sites.sites:
        why = "; ".join(r.describe() for r in sites.refused[:3]) or "no candidate layer"
        raise _GroupError(group, f"the model has no exact {group!r} site ({why}); use another group, or auto")
    kinds: dict[str, int] = {}
    for site in sites.sites:
        kinds[site.kind] = kinds.get(site.kind, 0) + 1
    return group, len(sites.sites), sites.dim, ", ".join(f"{k} {n}" for k, n in kinds.items())


def describe_model(spec: ModelSpec, data: DatasetSpec, groups: tuple[str, ...]) -> str:
    """One line for `telebench list`: the model, its size, and each teleport group's sites and dimension."""
    site_groups = tuple(g for g in groups if g in SITE_GROUPS or not spec.is_mlp)
    info = model_info(spec, data, site_groups)
    text = f"{spec.describe()}: {info.parameters:,} parameters"
    for group, n, dim, kinds in info.sites:
        text += f"; {group}: {n} site{'s' * (n != 1)} ({kinds}), group dimension {dim:,}"
    return text
