"""The CUDA paths for real: event clock, device-resident data and models. Skipped without a GPU."""

from __future__ import annotations

import time

import pytest
import torch

from telebench.errors import UserError
from telebench.training.batches import BatchStream
from telebench.training.clock import Clock, CudaEventTimer, resolve_device
from telebench.training.datasets import load_dataset
from telebench.training.evaluation import evaluate
from telebench.training.models import build_mlp
from telebench.training.specs import DatasetSpec, ModelSpec, freeze

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _work(n: int = 512, repeats: int = 20) -> None:
    a = torch.randn(n, n, device="cuda")
    for _ in range(repeats):
        a = torch.tanh(a @ a / n)


def test_event_clock_nests_and_synchronises_only_in_read() -> None:
    clock = Clock("cuda")
    assert isinstance(clock.timer, CudaEventTimer)
    _work()  # warm-up: cuBLAS initialisation off the clock
    torch.cuda.synchronize()
    for _ in range(3):
        with clock.span("train"):
            _work()
            with clock.span("teleport"):
                _work()
    assert len(clock._pending) == 6  # recorded, not yet resolved
    totals = clock.read()
    assert not clock._pending and len(clock.timer._pool) == 12  # events go back to the pool
    assert totals["train"] > totals["teleport"] > 0.0
    with clock.span("train"):
        _work()
    assert len(clock.timer._pool) == 10  # reused, not re-created
    assert clock.total("train") > totals["train"]


def test_event_time_is_bounded_by_the_synchronised_host_time() -> None:
    clock = Clock("cuda")
    _work()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with clock.span("train"):
        _work(1024, 30)
    torch.cuda.synchronize()
    host = time.perf_counter() - start
    assert 0.0 < clock.total("train") <= host * 1.01 + 1e-4


def test_device_resolution_with_cuda() -> None:
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UserError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_models_batches_and_evaluation_match_the_cpu() -> None:
    spec = ModelSpec((20, 32, 5), activation="relu")
    cpu_model, gpu_model = build_mlp(spec, seed=3), build_mlp(spec, seed=3, device="cuda")
    for p, q in zip(cpu_model.parameters(), gpu_model.parameters(), strict=True):
        assert q.device.type == "cuda" and torch.equal(p, q.cpu())

    bundle = load_dataset(DatasetSpec("synthetic-classification", freeze({"n_train": 256, "n_val": 64})))
    on_gpu = bundle.to("cuda")
    assert on_gpu.x_train.device.type == "cuda" and on_gpu.y_train.dtype == torch.int64
    cpu_stream = BatchStream(bundle.x_train, bundle.y_train, 32, seed=5)
    gpu_stream = BatchStream(on_gpu.x_train, on_gpu.y_train, 32, seed=5)
    for _ in range(20):  # crosses two epoch boundaries
        (xc, yc), (xg, yg) = cpu_stream.next(), gpu_stream.next()
        assert xg.device.type == "cuda" and torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())

    cpu_loss, cpu_acc = evaluate(cpu_model, bundle.x_val, bundle.y_val, bundle.task, batch_size=16)
    gpu_loss, gpu_acc = evaluate(gpu_model, on_gpu.x_val, on_gpu.y_val, on_gpu.task, batch_size=16)
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-4) and abs(gpu_acc - cpu_acc) <= 1 / 64
