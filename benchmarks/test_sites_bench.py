"""Site-teleport cost in gradient evaluations: the time of one 10-step grad-norm teleport with group
``auto`` divided by the time of one forward+backward of the same model on the same batch (128), both
in this thread's CPU time with one intra-op thread.

    pytest benchmarks/test_sites_bench.py --benchmark-json=sites.json

The covariant search needs one gradient; the invariance check takes a second at the written weights;
the rest is algebra on the gradient tensors. Target ≤ 5 for each family. Measurements, not pass/fail.
"""

from __future__ import annotations

import copy
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.symmetry import teleport
from telebench.training.model_families import build_model

BATCH, STEPS, LR = 128, 10, 5e-2
BUDGET_S = 2.0
CASES = {
    "cnn": ({"family": "cnn", "channels": [16, 32], "hidden": 64, "dropout": 0.1}, lambda: torch.randn(BATCH, 3, 32, 32)),
    "resnet": ({"family": "resnet", "widths": [16, 32], "blocks": 1}, lambda: torch.randn(BATCH, 3, 32, 32)),
    "transformer": ({"family": "transformer", "vocab": 16, "seq_len": 16, "d_model": 64, "heads": 4, "layers": 2,
                     "d_ff": 128, "n_classes": 16}, lambda: torch.randint(0, 16, (BATCH, 16))),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _gradient_seconds(model: nn.Module, x: Tensor, y: Tensor) -> list[float]:
    def step() -> float:
        start = time.thread_time()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        return time.thread_time() - start

    for _ in range(3):
        step()
    first = max(step(), 1e-6)
    return [step() for _ in range(max(10, min(500, int(BUDGET_S / first))))]


@pytest.mark.parametrize("family", list(CASES))
def test_site_teleport_cost_in_gradient_evaluations(benchmark, grad_eval_table, family: str) -> None:
    spec, inputs = CASES[family]
    model = build_model(spec, seed=0).train()
    torch.manual_seed(0)
    x, y = inputs(), torch.randint(0, 10 if family != "transformer" else 16, (BATCH,))
    start_state = copy.deepcopy(model.state_dict())
    eps = {m: m.eps for m in model.modules() if hasattr(m, "eps")}

    def restore() -> None:  # every round teleports from the same point (outside the timing)
        model.load_state_dict(start_state)
        for m, e in eps.items():
            m.eps = e

    records, seconds = [], []

    def run() -> None:
        start = time.thread_time()
        records.append(teleport(model, x, y, F.cross_entropy, group="auto", steps=STEPS, lr=LR, normalize_step=True))
        seconds.append(time.thread_time() - start)

    grads = _gradient_seconds(model, x, y)
    for _ in range(2):  # warm-up: the first call traces the model and finds its sites
        restore()
        run()
    rounds = max(5, min(100, int(BUDGET_S / max(seconds[-1], 1e-6))))
    benchmark.pedantic(run, setup=restore, rounds=rounds, iterations=1, warmup_rounds=0)
    grads += _gradient_seconds(model, x, y)
    rec = records[-1]
    seconds = seconds[2:]
    benchmark.extra_info.update(
        grad_evals=min(seconds) / min(grads),
        grad_evals_median=statistics.median(seconds) / statistics.median(grads),
        grad_eval_seconds=min(grads),
        teleport_seconds=min(seconds),
        clock="thread CPU time",
        accepted=rec.accepted,
        relative_loss_change=rec.relative_loss_change,
        objective_before=rec.objective_before,
        objective_after=rec.objective_after,
        threads=torch.get_num_threads(),
    )
    grad_eval_table.append((f"{family} batch {BATCH} auto cpu", benchmark.extra_info))
