"""`telebench profile` on CUDA: device time per phase, allocator peaks, CUDA-event timings, the GPU suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from telebench.cli import app
from telebench.profile.breakdown import profile_teleports
from telebench.profile.memory import measure_memory
from telebench.profile.subject import SubjectOptions, check_subject, subject_from_options
from telebench.profile.timing import Stopwatch, measure
from telebench.profile.workload import Workload, load_data
from telebench.training.clock import CudaEventTimer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gl_data() -> Workload:
    subject = subject_from_options(
        SubjectOptions(model="784-16-10-10", group="gl-data", batch=200, device="cuda")
    )
    check_subject(subject)
    w = Workload.build(subject, load_data(subject))
    w.warm_up(2)
    return w


def test_timings_use_cuda_events(gl_data):
    assert isinstance(Stopwatch(gl_data.device).timer, CudaEventTimer)
    timings = measure(gl_data, repeat=3)
    assert all(
        s > 0 for s in timings.teleport.seconds + timings.gradient.seconds + timings.train_step.seconds
    )
    assert timings.grad_evals() > 1  # a 10-step teleport costs more than one forward+backward


def test_phases_carry_device_time(gl_data):
    b = profile_teleports(gl_data, repeat=3)
    assert b.teleport_device_s > 0 and b.ops_by_device
    assert all(p.device_share is not None for p in b.phases)
    assert sum(p.device_share for p in b.phases) == pytest.approx(1.0)


def test_memory_uses_the_caching_allocator(gl_data):
    m = measure_memory(gl_data)
    assert m.cuda_max_allocated >= m.cuda_allocated_before > 0
    assert m.cuda_max_reserved >= m.cuda_max_allocated
    assert m.peak("teleport") is not None and m.peak("teleport") > 0


def test_gpu_suite_case_on_cuda(tmp_path):
    out = tmp_path / "p"
    result = CliRunner().invoke(
        app,
        [
            "profile",
            str(ROOT / "suites" / "gpu-profile.yaml"),
            "--case",
            "cifar-rescale-b200",
            "--repeat",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "profile.json").read_text())
    env = doc["environment"]
    assert env["cuda_runtime"] == torch.version.cuda and isinstance(env["tf32_matmul"], bool)
    assert doc["cases"][0]["subject"]["device"].startswith("cuda")
    trace = json.loads((out / "trace.json").read_text())
    assert any(e.get("cat") == "kernel" for e in trace["traceEvents"])
