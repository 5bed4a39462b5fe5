"""Seeded teleport searches whose step-by-step path is pinned in ``fixtures/teleport_paths.json``.

The fixture was written with the code *before* the fused gl-data kernel, the low-rank wide-layer
path and the vector-stored rescale search replaced the old per-step passes; the test
(tests/test_symmetry_same_path.py) reruns every case with today's code and compares, step by step,
the objective and the loss after k = 0, 1, …, K steps (a k-step teleport ends at the search's k-th
iterate, since each step starts from the previous one).

    python tests/teleport_paths.py        # rewrite the fixture (only to pin a deliberate change)
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FIXTURE = Path(__file__).parent / "fixtures" / "teleport_paths.json"

ACTS: dict[str, Any] = {
    "leaky": lambda: nn.LeakyReLU(0.1),
    "tanh": nn.Tanh,
    "softplus": lambda: nn.Softplus(2.0),
    "elu": lambda: nn.ELU(0.7),
    "relu": nn.ReLU,
    "identity": nn.Identity,
}

# name → settings; widths, batch, activation, bias, loss, then teleport keywords.
CASES: dict[str, dict[str, Any]] = {
    "gl-mnist-paper": dict(widths=(784, 16, 10, 10), batch=200, act="leaky", group="gl-data", lr=5e-2),
    "gl-mnist-2000": dict(widths=(784, 16, 10, 10), batch=2000, act="leaky", group="gl-data", lr=5e-2, steps=6),
    "gl-cifar-paper": dict(widths=(3072, 128, 32, 10), batch=200, act="leaky", group="gl-data", lr=5e-2, steps=6),
    "gl-tanh-mse-nobias": dict(widths=(12, 9, 7, 3), batch=40, act="tanh", bias=False, loss="mse", group="gl-data",
                               lr=0.05, normalize_step=True, direction="decrease"),
    "gl-wide": dict(widths=(20, 48, 40, 5), batch=16, act="leaky", group="gl-data", lr=0.05, normalize_step=True),
    "gl-wide-big": dict(widths=(50, 300, 300, 10), batch=100, act="leaky", group="gl-data", lr=5e-2, steps=6),
    "gl-wide-lowrank": dict(widths=(20, 80, 72, 5), batch=12, act="tanh", group="gl-data", lr=0.05,
                            normalize_step=True),
    "gl-wide-deep-linear": dict(widths=(16, 64, 60, 56, 4), batch=10, act="leaky", bias=False, group="gl-data",
                                lr=0.04, parametrization="linear", normalize_step=True, direction="decrease"),
    "gl-sandwich": dict(widths=(40, 120, 20, 130, 5), batch=30, act="elu", loss="mse", group="gl-data", lr=0.05,
                        normalize_step=True),
    "gl-wide-unnormalised": dict(widths=(30, 200, 160, 10), batch=40, act="leaky", group="gl-data", lr=5e-2),
    "gl-mixed-linear": dict(widths=(30, 64, 8, 4), batch=24, act="leaky", group="gl-data", lr=0.03,
                            parametrization="linear", normalize_step=True),
    "gl-softplus-deep": dict(widths=(10, 12, 11, 9, 4), batch=30, act="softplus", group="gl-data", lr=0.05,
                             normalize_step=True),
    "gl-elu-wide-mse": dict(widths=(8, 20, 16, 3), batch=12, act="elu", loss="mse", group="gl-data", lr=0.04,
                            normalize_step=True),
    "gl-sharpness": dict(widths=(10, 9, 8, 3), batch=30, act="leaky", group="gl-data", objective="sharpness",
                         lr=0.05, steps=4, normalize_step=True, objective_kwargs={"n_directions": 4}),
    "gl-curvature": dict(widths=(6, 7, 5, 3), batch=20, act="tanh", group="gl-data", objective="curvature",
                         lr=0.02, steps=3, normalize_step=True, objective_kwargs={"n_draws": 2}),
    "rescale-mnist-paper": dict(widths=(784, 16, 10, 10), batch=200, act="leaky", group="rescale", lr=5e-2),
    "rescale-deep-linear": dict(widths=(9, 12, 10, 8, 3), batch=40, act="relu", group="rescale", lr=0.2,
                                parametrization="linear", normalize_step=True),
    "rescale-nobias-mse": dict(widths=(7, 11, 6, 2), batch=25, act="leaky", bias=False, loss="mse",
                               group="rescale", lr=0.1, direction="decrease"),
    "linear-identity": dict(widths=(10, 8, 6, 3), batch=30, act="identity", group="linear", lr=0.02,
                            normalize_step=True),
}
TELEPORT_KEYS = ("group", "lr", "steps", "direction", "normalize_step", "parametrization", "objective",
                 "objective_kwargs")


def build(name: str) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor, Any, dict[str, Any]]:
    """The seeded float64 model, batch, loss and teleport keywords of one case."""
    spec = CASES[name]
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    widths, make = spec["widths"], ACTS[spec["act"]]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=spec.get("bias", True)))
        if i < len(widths) - 2:
            layers.append(make())
    model = nn.Sequential(*layers).double()
    x = torch.randn(spec["batch"], widths[0], dtype=torch.float64)
    if spec.get("loss") == "mse":
        y, loss_fn = torch.randn(spec["batch"], widths[-1], dtype=torch.float64), F.mse_loss
    else:
        y, loss_fn = torch.randint(0, widths[-1], (spec["batch"],)), F.cross_entropy
    kwargs = {k: spec[k] for k in TELEPORT_KEYS if k in spec}
    kwargs.setdefault("steps", 10)
    return model, x, y, loss_fn, kwargs


def path(name: str, **extra: Any) -> dict[str, list[float]]:
    """Objective and loss on the teleport batch after k = 0..K steps, as the teleport records them.

    ``extra`` keywords go to every ``teleport`` call (the acceptance bounds are opened wide, so that
    every iterate is written and measured)."""
    from telebench.symmetry import teleport

    model, x, y, loss_fn, kwargs = build(name)
    steps = kwargs.pop("steps")
    objective, loss = [], []
    for k in range(steps + 1):
        twin = copy.deepcopy(model)
        rec = teleport(twin, x, y, loss_fn, steps=k, tolerance=math.inf, generator=torch.Generator().manual_seed(3),
                       **kwargs, **extra)
        assert rec.steps_taken == k, (name, k, rec.steps_taken)
        objective.append(rec.objective_after)
        loss.append(rec.loss_after)
    return {"objective": objective, "loss": loss}


def main() -> None:
    torch.set_num_threads(1)
    data = {name: path(name) for name in CASES}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps({"torch": torch.__version__, "cases": data}, indent=1) + "\n")
    print(f"wrote {len(data)} cases to {FIXTURE}", file=sys.stderr)


if __name__ == "__main__":
    main()
