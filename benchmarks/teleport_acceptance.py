"""gl-data teleports before and after the safe acceptance rule, on the paper's optimizer schedule.

    python benchmarks/teleport_acceptance.py                      # Fashion-MNIST 784-256-256-10, 5 seeds
    python benchmarks/teleport_acceptance.py --dataset synthetic  # no files needed
    python benchmarks/teleport_acceptance.py --widths 784,16,10,10 --out acceptance.json

Each run trains a LeakyReLU(0.1) MLP without biases with the paper's optimizer settings (RMSprop and
Adam at lr 1e-4, SGD with momentum 0.9 at lr 1e-3; training batch 20) and teleports it with gl-data
at the first 8 minibatches of epoch 0 (10 steps of g = I + T at teleport lr 5e-2 on a fresh batch of
200, objective cap 100, the optimizer rebuilt after each teleport as the reference code does: the
settings of suites/paper-optimizers.yaml), then trains on for ``--epochs`` epochs.
Both arms of a seed start from the same weights and see the same batches:

* **none**: no teleport (the baseline of the seed);
* **before**: the old rule, the loss change on the teleport batch only (``max_weight_change=inf``);
* **after**: the default rule of :mod:`telebench.symmetry.acceptance` (finite, loss, size of the move).

It prints, per arm, the share of teleports rejected (by reason), the runs whose loss became NaN and
the distribution of ‖w' − w‖/‖w‖ over accepted teleports, split by whether the run stayed healthy;
``--out`` writes every teleport record and run summary as JSON. A script, not a test: it trains
for a few minutes on CPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from telebench.symmetry import teleport

FASHION = Path("/usr/share/datasets/fashion-mnist")
OPTIMIZERS = {
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-4),
    "momentum": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
}


def _idx(path: Path) -> torch.Tensor:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def load(name: str, features: int) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(description, x_train, y_train, x_val, y_val), pixels in [0, 1]."""
    if name == "fashion-mnist" and (FASHION / "train-images-idx3-ubyte.gz").exists():
        x = _idx(FASHION / "train-images-idx3-ubyte.gz").reshape(-1, 784).float() / 255
        y = _idx(FASHION / "train-labels-idx1-ubyte.gz").long()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
        x, y = x[order], y[order]
        return "Fashion-MNIST (50k train / 10k validation)", x[:50_000], y[:50_000], x[50_000:], y[50_000:]
    if name == "fashion-mnist":
        print(f"no Fashion-MNIST under {FASHION}; using synthetic data", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(10, features, generator=g) * (torch.rand(10, features, generator=g) < 0.2)
    labels = torch.randint(0, 10, (60_000,), generator=g)
    x = (centers[labels] + 0.3 * torch.rand(60_000, features, generator=g)).clamp(0, 1)
    return (f"synthetic 10-class prototypes + noise, {features} features", x[:50_000], labels[:50_000],
            x[50_000:], labels[50_000:])


def mlp(widths: list[int], seed: int, bias: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


def run(arm: str, opt_name: str, seed: int, data: tuple, args: argparse.Namespace) -> dict:
    _, xt, yt, xv, yv = data
    model = mlp(args.widths, seed, args.bias)
    optimizer = OPTIMIZERS[opt_name](model.parameters())
    train_order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
    tele_order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed + 10_000))
    bound = math.inf if arm == "before" else None
    steps_per_epoch = len(xt) // args.train_batch
    records, diverged_at, teleport_s = [], None, 0.0
    held = (xv[:1000], yv[:1000])  # measured only (no held_out_tolerance): how far the function moved
    for step in range(args.epochs * steps_per_epoch):
        if step < args.teleports and arm != "none":
            idx = tele_order[step * args.batch:(step + 1) * args.batch]
            start = time.perf_counter()
            rec = teleport(model, xt[idx], yt[idx], F.cross_entropy, group="gl-data", steps=10, lr=args.lr,
                           parametrization=args.parametrization, cap=args.cap or None, max_weight_change=bound,
                           held_out=held)
            teleport_s += time.perf_counter() - start
            records.append({k: v for k, v in rec.to_dict().items() if k != "seconds"})
            optimizer = OPTIMIZERS[opt_name](model.parameters())  # the reference code rebuilds it every time
        i = train_order[(step % steps_per_epoch) * args.train_batch:(step % steps_per_epoch + 1) * args.train_batch]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xt[i]), yt[i])
        if not math.isfinite(loss.item()):
            diverged_at = step
            break
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        val = float(F.cross_entropy(model(xv), yv)) if diverged_at is None else math.nan
    return {"arm": arm, "optimizer": opt_name, "seed": seed, "diverged_at": diverged_at, "val_loss": val,
            "teleport_seconds": teleport_s, "teleports": records}


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    pick = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.0, 0.5, 0.9)] + [values[-1]]
    return " / ".join(f"{v:.3g}" for v in pick)


def summarise(runs: list[dict]) -> None:
    base = {(r["optimizer"], r["seed"]): r["val_loss"] for r in runs if r["arm"] == "none"}
    for arm in ("before", "after"):
        mine = [r for r in runs if r["arm"] == arm]
        tele = [t for r in mine for t in r["teleports"]]
        if not tele:
            continue
        rejected = [t for t in tele if not t["accepted"]]
        reasons = {k: sum(t["rejection"] == k for t in rejected) for k in sorted({t["rejection"] for t in rejected})}
        nan_runs = [r for r in mine if r["diverged_at"] is not None]
        healthy = [t["relative_weight_change"] for r in mine if r["diverged_at"] is None
                   for t in r["teleports"] if t["accepted"]]
        sick = [t["relative_weight_change"] for r in nan_runs for t in r["teleports"] if t["accepted"]]
        vals = [r["val_loss"] for r in mine if r["diverged_at"] is None]
        print(f"{arm:6s}: {len(rejected)}/{len(tele)} teleports rejected ({len(rejected) / len(tele):.0%}) {reasons}; "
              f"{len(nan_runs)}/{len(mine)} runs reached NaN "
              f"{[(r['optimizer'], r['seed'], r['diverged_at']) for r in nan_runs]}")
        print(f"        ‖w'−w‖/‖w‖ of accepted teleports, min / median / 90% / max: healthy runs {_quantiles(healthy)}; "
              f"runs that reached NaN {_quantiles(sick)}")
        if vals:
            print(f"        validation loss of healthy runs: median {statistics.median(vals):.4f} (n={len(vals)})")
        worse = [r["val_loss"] - base[(r["optimizer"], r["seed"])] for r in mine
                 if (r["optimizer"], r["seed"]) in base and r["diverged_at"] is None]
        if worse:
            print(f"        validation loss minus the no-teleport run of the same seed: median {statistics.median(worse):+.4f}, "
                  f"max {max(worse):+.4f}")


BUCKETS = (0.0, 1.0, 2.0, 4.0, 10.0, math.inf)


def by_largest_move(runs: list[dict]) -> None:
    """Validation loss against the seed's no-teleport run, by the run's largest accepted move."""
    base = {(r["optimizer"], r["seed"]): r["val_loss"] for r in runs if r["arm"] == "none"}
    rows: dict[tuple[float, float], list[float]] = {}
    for r in runs:
        moves = [t["relative_weight_change"] for t in r["teleports"] if t["accepted"]]
        if r["arm"] == "none" or not moves or (r["optimizer"], r["seed"]) not in base:
            continue
        big = max(moves)
        lo, hi = next((lo, hi) for lo, hi in zip(BUCKETS, BUCKETS[1:], strict=False) if lo <= big < hi)
        delta = r["val_loss"] - base[(r["optimizer"], r["seed"])] if r["diverged_at"] is None else math.inf
        rows.setdefault((lo, hi), []).append(delta)
    print("largest accepted ‖w'−w‖/‖w‖ of a run → its validation loss minus the seed's no-teleport run:")
    for (lo, hi), deltas in sorted(rows.items()):
        worse = sum(d > 0 for d in deltas)
        print(f"  [{lo:g}, {hi:g}): {len(deltas):3d} runs, median {statistics.median(deltas):+.4f}, "
              f"worse than no teleport in {worse}/{len(deltas)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "synthetic"])
    parser.add_argument("--widths", default="784,256,256,10", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--seeds", default=5, type=int)
    parser.add_argument("--optimizers", default="rmsprop,adam,momentum", type=lambda s: s.split(","))
    parser.add_argument("--epochs", default=1, type=int)
    parser.add_argument("--teleports", default=8, type=int)
    parser.add_argument("--lr", default=5e-2, type=float)
    parser.add_argument("--batch", default=200, type=int)
    parser.add_argument("--train-batch", default=20, type=int)
    parser.add_argument("--bias", action="store_true", help="Linear layers with biases (the paper's have none)")
    parser.add_argument("--parametrization", default="linear", choices=["linear", "exp"])
    parser.add_argument("--cap", default=100.0, type=float, help="the reference code's dL_dt_cap (0: none)")
    parser.add_argument("--threads", default=1, type=int)
    parser.add_argument("--arms", default="none,before,after", type=lambda s: s.split(","))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.dataset, args.widths[0])
    print(f"{data[0]}; MLP {'-'.join(map(str, args.widths))}, gl-data 10 steps at lr {args.lr}, "
          f"{args.teleports} teleports in epoch 0, {args.epochs} epoch(s), seeds 0..{args.seeds - 1}")
    runs = []
    for opt_name in args.optimizers:
        for seed in range(args.seeds):
            for arm in args.arms:
                runs.append(run(arm, opt_name, seed, data, args))
                r = runs[-1]
                acc = sum(t["accepted"] for t in r["teleports"])
                print(f"  {opt_name:8s} seed {seed} {arm:6s}: {acc}/{len(r['teleports'])} accepted, "
                      f"val {r['val_loss']:.4f}, NaN at {r['diverged_at']}", flush=True)
    summarise(runs)
    by_largest_move(runs)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "data": data[0], "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
