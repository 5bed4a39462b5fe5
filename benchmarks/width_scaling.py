"""Teleport cost (gradient evaluations) against width on 784-w-w-10 at batch 200, with its log-log slope.

    python benchmarks/width_scaling.py                    # gl-data and rescale, w = 16, 64, 256, 1024
    python benchmarks/width_scaling.py --groups gl-data --widths 16,64,256,1024,2048
    python benchmarks/width_scaling.py --repeat 3         # three interleaved sweeps, the best of each width

The cost of one 10-step teleport (teleport lr 5e-2, as the paper's) over one forward+backward of the
same model and batch, both in this thread's CPU time with one intra-op thread (the method of
benchmarks/test_teleport_bench.py, whose ``measure`` this calls). The slope is the least-squares fit
of log(cost) against log(width) over the widths given: 0 means the cost in gradient evaluations does
not grow with width. With ``--repeat N`` the sweep runs N times, interleaved (so drift on a shared
machine hits every width alike), and each width's cost is its lowest; the slope is fitted to those.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_teleport_bench import measure  # noqa: E402


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="16,64,256,1024", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--groups", default="gl-data,rescale", type=lambda s: s.split(","))
    parser.add_argument("--batch", default=200, type=int)
    parser.add_argument("--repeat", default=1, type=int, help="interleaved sweeps; each width keeps its best")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'group':8s} {'model':16s} {'grad eval':>10s} {'teleport':>10s} {'ge (min)':>9s} {'ge (median)':>11s} "
          f"{'after passes':>12s}")
    best: dict[tuple[str, int], dict] = {}
    for r in range(args.repeat):
        for group in args.groups:
            for w in args.widths:
                info = measure((784, w, w, 10), args.batch, group, "cpu")
                if (group, w) not in best or info["grad_evals"] < best[group, w]["grad_evals"]:
                    best[group, w] = info
                tag = f" (sweep {r + 1}/{args.repeat})" if args.repeat > 1 else ""
                print(f"{group:8s} {f'784-{w}-{w}-10':16s} {info['grad_eval_seconds'] * 1e3:8.2f}ms "
                      f"{info['teleport_seconds'] * 1e3:8.1f}ms {info['grad_evals']:9.1f} "
                      f"{info['grad_evals_median']:11.1f} {info['grad_evals_after_passes']:12.1f}{tag}", flush=True)
    for group in args.groups:
        costs = [best[group, w]["grad_evals"] for w in args.widths]
        if args.repeat > 1:
            print(f"{group:8s} best of {args.repeat}: " + ", ".join(f"w={w} {c:.1f}" for w, c in zip(args.widths, costs,
                                                                                                     strict=True)))
        if len(set(args.widths)) > 1:  # a slope needs two widths
            print(f"{group:8s} log-log slope of cost against width: {slope(args.widths, costs):.3f}")


if __name__ == "__main__":
    main()
