"""`telebench profile` exit codes through the real entry point: bad options exit 2 with one sentence and
no traceback, before anything is measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    (["--model", "784-16-10-10", "--group", "gl-dta"], "--group 'gl-dta' is unknown"),
    (["--model", "784x16x10"], "--model '784x16x10'"),
    (["--model", "784-16-10-10", "--sweep", "width:16,64"], "--sweep 'width:16,64'"),
    ([str(ROOT / "suites" / "quickstart.yaml"), "--case", "digits"], "--case 'digits' is unknown"),
]
if not torch.cuda.is_available():
    CASES.append((["--model", "784-16-10-10", "--device", "cuda"], "no CUDA device"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Every case's process, started together (each spends seconds importing torch), then awaited."""
    out = tmp_path_factory.mktemp("profile-cli")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "telebench", "profile", *args, "--out", str(out / str(i))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i, (args, _) in enumerate(CASES)
    ]
    results = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=180)
        results.append((proc.returncode, stderr))
    return out, results


@pytest.mark.parametrize("index", range(len(CASES)), ids=[" ".join(a) for a, _ in CASES])
def test_bad_options_exit_2_with_one_line(finished, index):
    out, results = finished
    code, stderr = results[index]
    assert code == 2, stderr
    assert CASES[index][1] in " ".join(stderr.split())
    assert "Traceback" not in stderr
    assert not (out / str(index)).exists()  # it stopped before measuring anything


def test_a_profile_leaves_stderr_empty(tmp_path):
    """torch.profiler's USDT and allocator lines never reach the user's stderr (the threads default to 1)."""
    out = tmp_path / "p"
    done = subprocess.run(
        [sys.executable, "-m", "telebench", "profile", "--model", "16-8-4", "--activation", "relu", "--batch", "32",
         "--warmup", "1", "--repeat", "2", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert "| threads | 1 |" in (out / "profile.md").read_text()
