"""What a teleport's cost is made of: operator calls and matrix-product arithmetic against one gradient evaluation.

    python benchmarks/teleport_floor.py                 # the paper's nets and the width sweep, both groups
    python benchmarks/teleport_floor.py --time          # with the measured cost (test_teleport_bench's measure)

On one CPU thread a small net's teleport costs its operator calls (a few microseconds each, whatever the
arithmetic), a wide net's its matrix products (near the GEMM's peak). So two ratios bound what any
rewrite of the same algorithm in eager PyTorch can reach, in gradient evaluations (ge):

* **ops**: torch operator calls of one 10-step teleport (the whole ``teleport()`` call: checks,
  search, acceptance, write) over those of one forward+backward of the same model and batch;
* **flops**: the matrix-product floating-point operations (``torch.utils.flop_counter``: mm, addmm,
  bmm and the like; not QR, Cholesky or triangular solves) of the teleport over those of the
  forward+backward. Where both sides run at the GEMM's speed this is the teleport's floor in ge.

Views (transposes, slices, detach) are counted apart, since they cost a fraction of a real operator.
Counts are exact and deterministic (no timing), so they compare across machines; ``telebench profile``
prints the same counts (telebench/profile/counts.py) for any subject.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from test_teleport_bench import CASES, GROUPS, LR, STEPS, WIDTH_CASES, _mlp, measure  # noqa: E402

from telebench.profile.counts import count_work  # noqa: E402
from telebench.symmetry import teleport  # noqa: E402


def floor(widths: tuple[int, ...], batch: int, group: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = _mlp(widths, GROUPS[group], "cpu")
    x = torch.randn(batch, widths[0])
    y = torch.randint(0, widths[-1], (batch,))

    def gradient() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def move() -> None:
        teleport(model, x, y, F.cross_entropy, group=group, steps=STEPS, lr=LR)

    start = [p.detach().clone() for p in model.parameters()]

    def restore() -> None:
        with torch.no_grad():
            for p, s in zip(model.parameters(), start, strict=True):
                p.copy_(s)

    gradient()
    move()  # warm: first-call set-up (caches, lazy imports) is not the method's cost
    work = count_work(move, gradient, restore)
    t, g = work.teleport, work.gradient
    return dict(ge_ops=g.calls, ge_views=g.views, ge_flops=g.flops, ops=t.calls, views=t.views, flops=t.flops,
                op_ratio=work.call_ratio or 0.0, flop_ratio=work.flop_ratio or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default="gl-data,rescale", type=lambda s: s.split(","))
    parser.add_argument("--time", action="store_true", help="also measure the cost in ge (slow: a few s per case)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    head = f"{'net, batch':22s} {'group':8s} {'ops: teleport / ge':>20s} {'ratio':>6s} {'views':>6s} " \
           f"{'GFLOP: teleport / ge':>22s} {'ratio':>6s}"
    print(head + ("  measured ge (min)" if args.time else ""))
    for widths, batch in CASES + [c for c in WIDTH_CASES if c not in CASES]:
        for group in args.groups:
            r = floor(widths, batch, group)
            line = (f"{'-'.join(map(str, widths)) + f', {batch}':22s} {group:8s} {r['ops']:>10.0f} / {r['ge_ops']:<7.0f} "
                    f"{r['op_ratio']:6.1f} {r['views']:6.0f} {r['flops'] / 1e9:>11.3f} / {r['ge_flops'] / 1e9:<8.3f} "
                    f"{r['flop_ratio']:6.1f}")
            if args.time:
                line += f"  {measure(widths, batch, group, 'cpu')['grad_evals']:8.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
