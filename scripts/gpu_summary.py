"""Write the one-page GPU summary of `scripts/gpu-check.sh` (see the script for what it ran).

Reads the profile of suites/gpu-profile.yaml (teleport cost in gradient evaluations, break-even
steps, CUDA memory peaks) and the short teleport-vs-baseline GPU run, and measures whether the
CUDA-event training clock agrees with a synchronised host clock over the same training steps.
Without CUDA it writes a summary that says so and exits 0.

    python scripts/gpu_summary.py OUT_DIR   # OUT_DIR holds profile/ and run/ from gpu-check.sh
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _mib(value: Any) -> str:
    return "—" if value is None else f"{value / 2**20:.1f} MiB"


def _num(value: Any, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def profile_rows(path: Path) -> list[str]:
    if not path.is_file():
        return [f"_No profile found at {path}._"]
    doc = json.loads(path.read_text())
    rows = ["| case | group | teleport | gradient | cost (ge) | break-even steps | CUDA peak | CUDA peak (gradient) |",
            "|---|---|---|---|---|---|---|---|"]
    for case in doc["cases"]:
        f, m = case["figures"], case["memory"]
        rows.append(f"| {case['name']} | {case['subject']['teleport']['group']} | {_num(f['teleport_s'] * 1e3)} ms "
                    f"| {_num(f['gradient_s'] * 1e3)} ms | {_num(f['grad_evals'], '.1f')} | "
                    f"{_num(f['break_even_steps'], '.1f')} | {_mib(m.get('cuda_max_allocated'))} | "
                    f"{_mib(m.get('cuda_gradient_max_allocated'))} |")
    return rows


def run_rows(path: Path) -> list[str]:
    if not path.is_file():
        return [f"_No run results found at {path}._"]
    doc = json.loads(path.read_text())
    rows = ["| case | optimizer | arm | seeds | verdict | teleport overhead (median) |", "|---|---|---|---|---|---|"]
    for row in doc.get("summary", []):
        overhead = (row.get("teleport_overhead") or {}).get("median")
        rows.append(f"| {row['case']} | {row['optimizer']} | {row['arm']} | {row.get('n_seeds')} | "
                    f"{row.get('verdict') or '—'} | {_num(overhead)} |")
    return rows


def clock_agreement(steps: int = 200) -> list[str]:
    """Training steps timed by telebench's CUDA-event clock and by perf_counter around a synchronise."""
    import torch

    from telebench.training.clock import Clock
    from telebench.training.step import optimizer_step

    device = torch.device("cuda")
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 784, device=device), torch.randint(0, 10, (256,), device=device)
    loss = torch.nn.functional.cross_entropy
    for _ in range(20):  # warm-up: kernels, allocator
        optimizer_step(model, opt, loss, x, y)
    rows = ["| repeat | CUDA-event clock | synchronised host clock | ratio |", "|---|---|---|---|"]
    for r in range(3):
        clock = Clock(device)
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            with clock.span("train"):
                optimizer_step(model, opt, loss, x, y)
        torch.cuda.synchronize(device)
        host = time.perf_counter() - start
        events = clock.read()["train"]
        rows.append(f"| {r + 1} | {events * 1e3:.2f} ms | {host * 1e3:.2f} ms | {events / host:.3f} |")
    return rows


def main(out: Path) -> int:
    import torch

    lines = ["# GPU check", ""]
    if not torch.cuda.is_available():
        lines += ["No CUDA device is visible here, so nothing was measured; run `scripts/gpu-check.sh` on a CUDA machine."]
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    lines += [f"Device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}.", "",
              "## Teleport cost (suites/gpu-profile.yaml)", "",
              "ge = teleport time ÷ one loss+gradient evaluation of the same model and batch; break-even = the",
              "training steps a teleport costs.", "", *profile_rows(out / "profile" / "profile.json"), "",
              "## Teleport against baseline on the GPU (short run)", "", *run_rows(out / "run" / "results.json"), "",
              "## Does the CUDA-event clock agree with a synchronised host clock?", "",
              "200 SGD steps of a 784-256-10 MLP at batch 256; a ratio near 1 means the training clock telebench",
              "reports on CUDA measures the same time as a host clock read after `torch.cuda.synchronize()`.", "",
              *clock_agreement()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/gpu")))
