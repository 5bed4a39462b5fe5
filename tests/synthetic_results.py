"""Build realistic results dicts (the results.json contract) without training, for summary/report tests.

Loss curves are exponential decays to a floor with seeded noise; the training clock advances by a fixed
time per step plus each teleport's cost, so speedups and overheads are known in advance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from telebench.analysis.summary import resolve_targets, summarise


def make_trial(
    case: str = "digits-mlp",
    arm: str = "baseline",
    optimizer: str = "adam",
    seed: int = 0,
    *,
    arm_kind: str | None = None,
    device: str = "cpu",
    status: str = "ok",
    message: str = "",
    rate: float = 0.02,
    step_s: float = 0.01,
    n_steps: int = 200,
    eval_every: int = 10,
    teleport_steps: tuple[int, ...] = (),
    teleport_s: float = 0.0,
    loss_change: float = 1e-7,
    target: dict[str, Any] | None = None,
    noise: float = 0.0,
    host: str = "box",
    shared_device: bool = False,
    noise_of: str | None = None,
) -> dict[str, Any]:
    """One trial: loss = 0.1 + 2.2·exp(−rate·step)·(1 + noise·ε), clock = step·step_s + teleports.

    ε is seeded by the seed and the arm label, or by `noise_of`'s label: an arm with the baseline's
    rate and `noise_of="baseline"` has the baseline's trajectory bit for bit (a no-op control)."""
    rng = np.random.default_rng(seed * 7919 + len(noise_of or arm))
    teleport_steps = tuple(s for s in teleport_steps if s <= n_steps)
    history = []
    for step in range(0, n_steps + 1, eval_every):
        loss = 0.1 + 2.2 * math.exp(-rate * step) * (1.0 + noise * float(rng.standard_normal()))
        clock = step * step_s + teleport_s * sum(s <= step for s in teleport_steps)
        history.append(
            {
                "step": step,
                "epoch": step / 100,
                "train_clock_s": clock,
                "train_loss": loss,
                "val_loss": 1.1 * loss,
                "val_accuracy": 1.0 - loss / 2.5,
            }
        )
    if status == "diverged":
        history[-1].update(train_loss=math.nan, val_loss=math.nan)
    if status in ("error", "skipped"):
        history = []
    teleports = (
        [
            {
                "step": s,
                "loss_before": 1.0,
                "loss_after": 1.0 + loss_change,
                "held_out_loss_before": 1.0,
                "held_out_loss_after": 1.0 + 2 * loss_change,
                "objective_before": 0.1,
                "objective_after": 0.2,
                "relative_loss_change": loss_change,
                "held_out_relative_loss_change": 2 * loss_change,
                "relative_weight_change": 0.03,
                "steps_taken": 10,
                "seconds": teleport_s,
                "accepted": True,
            }
            for s in teleport_steps
        ]
        if status not in ("error", "skipped")
        else []
    )
    train_clock = history[-1]["train_clock_s"] if history else 0.0
    tele_clock = teleport_s * len(teleports)
    last = history[-1] if history else {}
    spec_target = target or {"metric": "train_loss", "kind": "baseline-final", "value": None, "slack": 0.0}
    return {
        "id": f"{case}-{optimizer}-{arm}-{seed}-{device}",
        "case": case,
        "arm": arm,
        "optimizer": optimizer,
        "seed": seed,
        "device": device,
        "spec": {"case": case, "arm": arm, "arm_kind": arm_kind or arm, "seed": seed, "target": spec_target},
        "host": host,
        "status": status,
        "message": message,
        "train_clock_s": train_clock,
        "teleport_clock_s": tele_clock,
        "eval_clock_s": 0.1,
        "wall_s": train_clock + 0.1,
        "steps": n_steps if history else 0,
        "epochs": n_steps / 100,
        "teleport_overhead": tele_clock / train_clock if teleports and train_clock else None,
        "final_train_loss": last.get("train_loss"),
        "final_val_loss": last.get("val_loss"),
        "final_val_accuracy": last.get("val_accuracy"),
        "final_test_loss": None,
        "final_test_accuracy": None,
        "history": history,
        "teleports": teleports,
        "timing": {"shared_device": shared_device, "compile_included": False},
    }


def make_trials(seeds: int = 8, slack: float = 0.05) -> list[dict[str, Any]]:
    """Two cases. digits-mlp: adam and sgd, where teleport decays twice as fast (and pays 0.05 s per
    teleport at steps 0 and 50); reset-only is ±8 % off the baseline, alternating by seed, with adam,
    and the baseline's very trajectory with sgd (a no-op: `identical`); synthetic: one diverged, one
    error and one skipped trial, and an absolute accuracy target. 8 seeds by default: the fewest that
    leave room for Holm over the report's comparisons (a verdict needs at least 6)."""
    target = {"metric": "train_loss", "kind": "baseline-final", "value": None, "slack": slack}
    trials = []
    for optimizer, rate in (("adam", 0.03), ("sgd", 0.015)):
        for seed in range(seeds):
            jitter = 1.0 + 0.03 * ((seed * 37) % 7 - 3) / 3  # ±3 % per seed, differs per seed
            common = dict(case="digits-mlp", optimizer=optimizer, seed=seed, target=target, noise=0.002)
            trials.append(make_trial(arm="baseline", rate=rate * jitter, **common))
            trials.append(
                make_trial(
                    arm="teleport", rate=2 * rate * jitter, teleport_steps=(0, 50), teleport_s=0.05, **common
                )
            )
            if optimizer == "sgd":
                trials.append(make_trial(arm="reset-only", rate=rate * jitter, noise_of="baseline", **common))
            else:
                trials.append(
                    make_trial(arm="reset-only", rate=rate * jitter * (1.0 + 0.16 * (seed % 2 - 0.5)), **common)
                )
    acc = {"metric": "val_accuracy", "kind": "absolute", "value": 0.8, "slack": 0.0}
    for seed in range(3):
        common = dict(case="synthetic", optimizer="sgd", seed=seed, target=acc, n_steps=100)
        trials.append(make_trial(arm="baseline", rate=0.02, **common))
        status = {0: "diverged", 1: "error", 2: "ok"}[seed]
        trials.append(
            make_trial(
                arm="teleport",
                rate=0.05,
                status=status,
                teleport_steps=(0,),
                teleport_s=0.02,
                message={"diverged": "loss became nan at step 90", "error": "RuntimeError: boom"}.get(
                    status, ""
                ),
                **common,
            )
        )
    trials.append(
        make_trial(
            case="synthetic",
            arm="reset-only",
            optimizer="sgd",
            seed=0,
            status="skipped",
            message="cuda not available",
            target=acc,
        )
    )
    return trials


def make_results(trials: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A complete results dict, targets resolved and summary computed, as `telebench run` writes it."""
    resolved = resolve_targets(trials if trials is not None else make_trials())
    results = {
        "schema": "telebench.results/1",
        "suite": "synthetic-suite",
        "suite_path": "suites/synthetic.yaml",
        "created": "2026-11-22T04:00:00+00:00",
        "partial": False,
        "environment": {
            "telebench": "0.1.0",
            "python": "3.11.7",
            "torch": "2.14.1",
            "cuda": None,
            "devices": ["cpu"],
            "device_names": {"cpu": "Test CPU"},
            "cpu_model": "Test CPU",
            "threads": 2,
            "hostname": "box",
            "platform": "Linux",
            "git_commit": None,
        },
        "trials": resolved,
        "summary": summarise(resolved),
    }
    results.update(extra)
    return results
