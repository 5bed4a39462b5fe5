"""The timed training loop: the arms of one seed, trained side by side (DESIGN.md §4).

All arms of one pair key start from identical weights and see identical batches. They advance
in chunks of `eval_every` steps, taking turns (the order rotates every chunk), so machine drift
hits every arm alike. Clocks cover only training work (data, forward, backward, step, teleport);
evaluation and held-out invariance checks run off the clock in their own accumulator. The lr-bump
control's measurement of a teleport's gradient-norm factor is its method, so it runs on the train and
teleport clocks like a teleport (telebench/experiments/pairs/lr_bump.py).
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from telebench.execution.task import ProgressFn
from telebench.experiments.pairs.lr_bump import measure_factor, scale_lrs
from telebench.experiments.pairs.pretrain import pretrain, split_for_pretrain
from telebench.experiments.pairs.spec import ScheduleSpec, TrialSpec
from telebench.training.batches import BatchStream
from telebench.training.clock import Clock, resolve_device
from telebench.training.dataset_bundle import DatasetBundle
from telebench.training.datasets import load_dataset
from telebench.training.evaluation import TRAIN_EVAL_SIZE, evaluate, loss_fn_for
from telebench.training.heap import paused
from telebench.training.model_families import build_from_spec
from telebench.training.optimizers import apply_state_policy, make_optimizer
from telebench.training.step import optimizer_step, state_snapshot

HELD_OUT_SIZE = 2_000  # held-out samples for each teleport's invariance check
WARMUP_STEPS = 3
# A training loss this many times its value at step 0 counts as diverged: training that multiplies its
# starting loss tenfold has blown up (a finite 4e5 from lr 1e6 on digits must not count as "ok").
DIVERGENCE_FACTOR = 10.0


def teleport_steps(schedule: ScheduleSpec, steps_per_epoch: int, total_steps: int) -> set[int]:
    """The optimizer steps before which a teleport (or a reset, for reset-only) happens."""
    if schedule.kind == "at_steps":
        steps = set(schedule.steps)
    elif schedule.kind == "at_epochs":
        steps = {e * steps_per_epoch for e in schedule.epochs}
    elif schedule.kind == "every":
        steps = set(range(schedule.start, total_steps, max(1, schedule.every)))
    elif schedule.kind == "first_minibatches":
        steps = {e * steps_per_epoch + i for e in schedule.epochs for i in range(schedule.count)}
    else:
        raise ValueError(f"unknown schedule kind {schedule.kind!r}")
    return {s for s in steps if 0 <= s < total_steps}


def total_steps_for(spec: TrialSpec, steps_per_epoch: int) -> int:
    """Step budget; a seconds budget gets an effectively unbounded step count and stops on the clock."""
    from telebench.training.step import budget_steps

    return budget_steps(spec.budget.kind, spec.budget.value, steps_per_epoch)


@dataclass
class _ArmState:
    spec: TrialSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    stream: BatchStream
    tele_stream: BatchStream
    clock: Clock
    schedule: set[int]
    total_steps: int
    step: int = 0
    status: str = "ok"
    message: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    teleports: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0  # this arm's own wall time; arms interleave, so a shared stopwatch would mix them
    traceback: str = ""
    fraction: float = 0.0  # of the budget, for progress bars
    done: bool = False
    base_lrs: list[float] = field(default_factory=list)  # lr-bump: each param group's unbumped lr
    bump_left: int = 0  # lr-bump: optimizer steps the running bump still lasts


class PairRunner:
    """Trains the arms of one pair key (case, optimizer, device, seed) interleaved."""

    def __init__(
        self,
        specs: list[TrialSpec],
        data_root: str | None = None,
        progress: ProgressFn | None = None,
        data: DatasetBundle | None = None,
    ) -> None:
        keys = {s.pair_key for s in specs}
        if len(keys) != 1:
            raise ValueError(f"PairRunner needs the arms of one pair, got keys {sorted(keys)}")
        self.specs = specs
        first = specs[0]
        self.device = resolve_device(first.device)
        self.data = (data or load_dataset(first.dataset, data_root)).to(self.device)
        if first.model.inputs == "image":  # a CNN reads (N, C, H, W); the bundle keeps rows flat
            self.data = self.data.as_images()
        self.data, self.holdout = split_for_pretrain(first, self.data)  # pretrain's holdout: not trained on
        self.loss_fn = loss_fn_for(self.data.task)
        self.progress = progress
        n_eval = min(TRAIN_EVAL_SIZE, len(self.data.x_train))
        self.train_eval = (self.data.x_train[:n_eval], self.data.y_train[:n_eval])
        n_ho = min(HELD_OUT_SIZE, len(self.data.x_val))
        self.held_out = (self.data.x_val[:n_ho], self.data.y_val[:n_ho])

    # ---- set-up ---------------------------------------------------------------------------------
    def _new_arm(self, spec: TrialSpec, init_state: dict[str, torch.Tensor]) -> _ArmState:
        model = build_from_spec(spec.model, seed=spec.seed, device=self.device)
        model.load_state_dict(init_state)
        optimizer = make_optimizer(spec.optimizer, model.parameters())
        stream = BatchStream(self.data.x_train, self.data.y_train, spec.batch_size, seed=spec.seed)
        tele_bs = spec.teleport.batch_size if spec.teleport else spec.batch_size
        tele_stream = BatchStream(
            self.data.x_train, self.data.y_train, min(tele_bs, len(self.data.x_train)), seed=spec.seed + 104729
        )
        total = total_steps_for(spec, stream.steps_per_epoch)
        schedule: set[int] = set()
        if spec.teleport is not None and spec.arm_kind != "baseline":
            horizon = total if spec.budget.kind != "seconds" else 10**7
            schedule = teleport_steps(spec.teleport.schedule, stream.steps_per_epoch, horizon)
        return _ArmState(spec, model, optimizer, stream, tele_stream, Clock(self.device), schedule, total,
                         base_lrs=[float(g["lr"]) for g in optimizer.param_groups])

    def _warm_up(self, template: nn.Module, spec: TrialSpec) -> None:
        """A few throwaway steps on a copy, so allocator/kernel start-up costs hit no arm's clock. The
        first optimizer imports torch._dynamo; with the collector paused meanwhile and the start-up
        heap frozen after (``heap.paused``), no full collection of it lands on a clock later."""
        with paused(freeze=True):
            model = copy.deepcopy(template)
            opt = make_optimizer(spec.optimizer, model.parameters())
            stream = BatchStream(self.data.x_train, self.data.y_train, spec.batch_size, seed=spec.seed + 1)
            for _ in range(WARMUP_STEPS):
                optimizer_step(model, opt, self.loss_fn, *stream.next())
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

    # ---- measurement (off the clock) ------------------------------------------------------------
    def _evaluate(self, arm: _ArmState) -> bool:
        """Append a history row; returns False when the arm diverged."""
        clocks = arm.clock.read()  # synchronises on CUDA: a measurement boundary
        with arm.clock.span("eval"):
            train_loss, _ = evaluate(arm.model, *self.train_eval, self.data.task, arm.spec.eval_batch_size)
            val_loss, val_acc = evaluate(arm.model, self.data.x_val, self.data.y_val, self.data.task, arm.spec.eval_batch_size)
        arm.history.append(
            {
                "step": arm.step,
                "epoch": arm.step / arm.stream.steps_per_epoch,
                "train_clock_s": clocks.get("train", 0.0),
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            arm.status, arm.message = "diverged", f"loss became {train_loss} at step {arm.step}"
            return False
        start = arm.history[0]["train_loss"]
        if train_loss > DIVERGENCE_FACTOR * max(start, 1e-12):
            arm.status = "diverged"
            arm.message = (f"training loss {train_loss:.4g} at step {arm.step} is over {DIVERGENCE_FACTOR:g}× "
                           f"its starting {start:.4g}")
            return False
        return True

    def _held_out_loss(self, arm: _ArmState) -> float:
        """In eval mode: BatchNorm then uses (and leaves) its running statistics, Dropout draws nothing."""
        was_training = arm.model.training
        arm.model.eval()
        try:
            with arm.clock.span("eval"), torch.no_grad():
                return float(self.loss_fn(arm.model(self.held_out[0]), self.held_out[1]))
        finally:
            arm.model.train(was_training)

    # ---- training -------------------------------------------------------------------------------
    def _teleport(self, arm: _ArmState) -> None:
        from telebench.symmetry import teleport

        spec, tp = arm.spec, arm.spec.teleport
        assert tp is not None
        if arm.spec.arm_kind == "reset-only":
            with arm.clock.span("train"), arm.clock.span("teleport"):
                arm.optimizer = apply_state_policy(arm.optimizer, "reset", spec.optimizer, list(arm.model.parameters()))
            return
        if arm.spec.arm_kind == "lr-bump":
            self._bump(arm)
            return
        ho_before = self._held_out_loss(arm)  # off the clock: a measurement, not training work
        with arm.clock.span("train"), arm.clock.span("teleport"):
            xt, yt = arm.tele_stream.next()
            record = teleport(
                arm.model,
                xt,
                yt,
                self.loss_fn,
                mode="random" if spec.arm_kind == "random-teleport" else "optimize",
                generator=self._generator(arm),
                **tp.search_options(),
            )
            if record.accepted or tp.state_policy == "reset":
                arm.optimizer = self._state_after(arm, record)
        ho_after = self._held_out_loss(arm)
        row = record.to_dict()
        row.update(
            step=arm.step,
            held_out_loss_before=ho_before,
            held_out_loss_after=ho_after,
            held_out_relative_loss_change=abs(ho_after - ho_before) / max(abs(ho_before), 1e-12),
        )
        arm.teleports.append(row)

    def _bump(self, arm: _ArmState) -> None:
        """lr-bump: measure the teleport's grad-norm factor on a copy (on the clocks, like a teleport), apply
        the teleport arm's state policy to the unmoved weights, and scale the lr for bump_steps (lr_bump.py)."""
        spec, tp = arm.spec, arm.spec.teleport
        assert tp is not None
        with arm.clock.span("train"), arm.clock.span("teleport"):
            xt, yt = arm.tele_stream.next()
            factor, row = measure_factor(arm.model, xt, yt, self.loss_fn, tp, self._generator(arm))
            if tp.state_policy == "reset":  # keep and transport keep the state: the weights did not move
                arm.optimizer = apply_state_policy(arm.optimizer, "reset", spec.optimizer, list(arm.model.parameters()))
            scale_lrs(arm.optimizer, arm.base_lrs, factor)
            arm.bump_left = tp.bump_steps
        arm.teleports.append({"step": arm.step, **row, "bump_steps": tp.bump_steps})

    @staticmethod
    def _state_after(arm: _ArmState, record: Any) -> torch.optim.Optimizer:
        """The optimizer after a teleport: reset, kept, or transported (through the sites it moved along,
        for a site teleport; through the MLP's layer elements otherwise)."""
        from telebench.symmetry.sites.teleport import is_site_request
        from telebench.symmetry.sites.transport import transport_site_state

        spec, tp = arm.spec, arm.spec.teleport
        assert tp is not None
        if tp.state_policy == "transport" and is_site_request(arm.model, tp.group):
            transport_site_state(arm.optimizer, arm.model, record.transforms)
            return arm.optimizer
        return apply_state_policy(arm.optimizer, tp.state_policy, spec.optimizer, list(arm.model.parameters()),
                                  record.transforms)

    def _generator(self, arm: _ArmState) -> torch.Generator:
        """Seeded per (seed, step): random teleports and objective draws repeat exactly on a rerun,
        and every arm of a seed draws the same numbers at the same step."""
        return torch.Generator(device=self.device).manual_seed(arm.spec.seed * 1_000_003 + arm.step)

    def _train_until(self, arm: _ArmState, stop: int) -> None:
        """Train `arm` up to step `stop`: the scheduled event (teleport, reset or lr bump) before its step, and
        the plain steps between two events in one train span. The train clock still covers every step's data,
        forward, backward and update; stamped once a stretch instead of once a step, it carries none of the
        loop's own bookkeeping, and on CUDA it records two events a stretch (README, Performance)."""
        while arm.step < stop:
            if arm.step in arm.schedule:
                self._teleport(arm)  # times itself: teleport work on the train and teleport clocks, checks off
            end = next((s for s in range(arm.step + 1, stop) if s in arm.schedule), stop) if arm.schedule else stop
            if arm.bump_left:  # lr-bump: the stretch ends with the bump's last step
                end = min(end, arm.step + arm.bump_left)
            with arm.clock.span("train"):
                begin = arm.step
                self._steps(arm, end)
                if arm.bump_left:  # lr-bump: the bump's last step restores the lr
                    arm.bump_left -= arm.step - begin
                    if not arm.bump_left:
                        scale_lrs(arm.optimizer, arm.base_lrs, 1.0)

    def _steps(self, arm: _ArmState, end: int) -> None:
        """Optimizer steps up to step `end` with nothing else in the loop; `arm.step` counts the finished ones,
        also when one raises."""
        step, model, optimizer, loss_fn, batch = optimizer_step, arm.model, arm.optimizer, self.loss_fn, arm.stream.next
        done = arm.step
        try:
            while done < end:
                step(model, optimizer, loss_fn, *batch())
                done += 1
        finally:
            arm.step = done

    def _advance(self, arm: _ArmState, until_step: int) -> None:
        """Train `arm` up to `until_step` (or its budget), then evaluate off the clock."""
        t0 = time.perf_counter()
        try:
            self._train_until(arm, min(until_step, arm.total_steps))
            ok = self._evaluate(arm)
        except Exception as exc:  # a crashing arm is recorded, its siblings go on
            arm.status = "error"
            arm.message = f"{type(exc).__name__}: {exc}"
            arm.traceback = traceback.format_exc(limit=8)
            ok = False
        arm.wall_s += time.perf_counter() - t0
        before = arm.fraction
        if arm.spec.budget.kind == "seconds":
            arm.fraction = min(1.0, arm.clock.total("train") / arm.spec.budget.value)
        else:  # a budget of zero steps is done at once (validation refuses one; this keeps the loop finite)
            arm.fraction = 1.0 if arm.step >= arm.total_steps else arm.step / arm.total_steps
        if not ok or arm.fraction >= 1.0:
            arm.done = True
            arm.fraction = 1.0
        if self.progress is not None:
            self.progress(arm.spec, arm.fraction - before)

    def run(self) -> list[dict[str, Any]]:
        first = self.specs[0]
        template = build_from_spec(first.model, seed=first.seed, device=self.device)
        self.pretrained = pretrain(template, first, self.data, self.holdout, self.loss_fn)  # off every arm's clock
        init_state = state_snapshot(template)
        self._warm_up(template, first)
        arms = [self._new_arm(spec, init_state) for spec in self.specs]
        for arm in arms:
            t0 = time.perf_counter()
            self._evaluate(arm)
            arm.wall_s += time.perf_counter() - t0
        chunk = 0
        while not all(a.done for a in arms):
            order = arms[chunk % len(arms):] + arms[: chunk % len(arms)]
            for arm in order:
                if not arm.done:
                    self._advance(arm, arm.step + arm.spec.eval_every)
            chunk += 1
        return [self._finish(arm) for arm in arms]

    # ---- the trial record ------------------------------------------------------------------------
    def _finish(self, arm: _ArmState) -> dict[str, Any]:
        spec = arm.spec
        clocks = arm.clock.read()
        train_s = clocks.get("train", 0.0)
        tele_s = clocks.get("teleport", 0.0)
        last: dict[str, Any] = next((h for h in reversed(arm.history) if "train_loss" in h), {})
        test_loss: float | None = None
        test_acc: float | None = None
        x_test, y_test = self.data.x_test, self.data.y_test
        if arm.status == "ok" and x_test is not None and y_test is not None:
            test_loss, test_acc = evaluate(arm.model, x_test, y_test, self.data.task, spec.eval_batch_size)
        return {
            "id": spec.id,
            "case": spec.case,
            "arm": spec.arm,
            "arm_kind": spec.arm_kind,
            "optimizer": spec.optimizer_label,
            "seed": spec.seed,
            "device": spec.device,
            "spec": spec.to_dict(),
            "status": arm.status,
            "message": arm.message,
            "target": None,
            "steps_to_target": None,
            "time_to_target_s": None,
            "train_clock_s": train_s,
            "teleport_clock_s": tele_s,
            "eval_clock_s": clocks.get("eval", 0.0),
            "wall_s": arm.wall_s,
            "steps": arm.step,
            "epochs": arm.step / arm.stream.steps_per_epoch,
            "teleport_overhead": (tele_s / train_s) if arm.schedule and train_s > 0 else None,
            "final_train_loss": last.get("train_loss"),
            "final_val_loss": last.get("val_loss"),
            "final_val_accuracy": last.get("val_accuracy"),
            "final_test_loss": test_loss,
            "final_test_accuracy": test_acc,
            "history": [h for h in arm.history if "train_loss" in h],
            "teleports": arm.teleports,
            "timing": {"shared_device": False, "compile_included": False, "warmup_steps": WARMUP_STEPS},
            "traceback": arm.traceback or None,
            **({} if self.pretrained is None else {"pretrain": self.pretrained}),
        }
