"""telebench.experiments.meta: learned teleports are exact and differentiable, meta-training helps on unseen seeds,
one seed gives one result, and the report is written. Suite errors are in test_meta_suite.py."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from telebench.config.overrides import overrides_from_options
from telebench.experiments.base import RunRequest
from telebench.experiments.meta.action import act, gl_data_act, normalise
from telebench.experiments.meta.evaluate import meta_test
from telebench.experiments.meta.run import build_arm, run_case
from telebench.experiments.meta.suite import MetaCase, load_meta_suite
from telebench.experiments.meta.task import TaskSpec, sample_task
from telebench.experiments.meta.train import meta_train
from telebench.experiments.registry import load_config
from telebench.experiments.runner import run_experiment
from telebench.symmetry import get_group

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "suites" / "paper-meta.yaml"
# The default suite's small setting: few and short trajectories, three unseen seeds.
SMALL = ["defaults.meta_train.trajectories=6", "defaults.meta_train.steps=20", "defaults.test.steps=20",
         "defaults.test.seeds=[100000,100001,100002]"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """As the suite's `threads: 1` does: tiny matrices, and no stalls when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_case(name: str, *extra: str) -> MetaCase:
    exp, suite = load_config(PAPER, overrides_from_options(sets=[*SMALL, *extra], cases=name))
    assert exp.kind == "meta"
    (case,) = suite.cases
    return case


def arm_index(case: MetaCase, name: str) -> int:
    return next(k for k, a in enumerate(case.arms) if a.name == name)


@pytest.fixture(scope="module")
def gl_case() -> MetaCase:
    return small_case("leakyrelu-gl-data")


@pytest.fixture(scope="module")
def rescale_case() -> MetaCase:
    return small_case("relu-rescale")


# ---- the action ----------------------------------------------------------------------------------------


def test_gl_data_action_equals_the_groups_and_is_differentiable() -> None:
    task = sample_task(TaskSpec(widths=(20, 20, 20), dtype="float64"), seed=7)
    group = get_group("gl-data")
    algebra = [torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                           requires_grad=True)]
    g, _ = group.element(normalise(algebra, 0.01), "exp")
    expected, _ = group.act(task.arch, task.init, g, None, group.prepare(task.arch, task.init, task.x))
    moved = gl_data_act(task.arch, task.init, g, task.x)
    for (w, _), (v, _) in zip(moved, expected, strict=True):
        torch.testing.assert_close(w, v, rtol=1e-9, atol=1e-9)
    before, after = task.loss(task.init), task.loss(moved)
    assert abs(float((after - before).detach())) / float(before) < 1e-10  # batch 20 = width 20: exact on the batch
    # Meta-gradients reach T through both the left factor g and the least-squares right factor.
    held = task.heldout_loss(moved)
    (grad,) = torch.autograd.grad(held, algebra)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("group_name", ["rescale", "gl-data"])
def test_action_gradient_matches_finite_differences(group_name: str) -> None:
    task = sample_task(TaskSpec(widths=(20, 20, 20), dtype="float64", init="default"), seed=3)
    group = get_group(group_name)
    shapes = [group.algebra_shape(20)]
    gen = torch.Generator().manual_seed(1)
    t0 = [torch.randn(s, dtype=torch.float64, generator=gen) * 0.01 for s in shapes]
    direction = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]

    def f(t: list[torch.Tensor]) -> torch.Tensor:
        return task.heldout_loss(act(group, task.arch, task.init, t, "exp", task.x))

    leaf = [t.clone().requires_grad_() for t in t0]
    (grad,) = torch.autograd.grad(f(leaf), leaf)
    eps = 1e-6
    plus = f([t + eps * d for t, d in zip(t0, direction, strict=True)])
    minus = f([t - eps * d for t, d in zip(t0, direction, strict=True)])
    numeric = float((plus - minus) / (2 * eps))
    assert float((grad * direction[0]).sum()) == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_meta_gradient_flows_through_the_teleport(gl_case: MetaCase) -> None:
    opt = build_arm(gl_case, arm_index(gl_case, "lstm-lr-tele"))
    task = sample_task(gl_case.task.to_spec(), seed=0)
    params, state = task.init, opt.initial_state()
    total = torch.zeros((), dtype=torch.float64)
    for _ in range(3):
        _, grads = task.loss_and_grads(params, keep_graph=True)
        result = opt.step(task, params, grads, state)
        params, state = result.params, result.state
        total = total + task.loss(params).log()
    total.backward()
    assert opt.teleport_lstm is not None
    head = opt.teleport_lstm.head.weight.grad
    assert head is not None and torch.isfinite(head).all() and head.abs().sum() > 0


# ---- meta-training and testing -----------------------------------------------------------------------


@pytest.mark.parametrize(("design", "preprocess"), [("full", "none"), ("coordinatewise", "log-sign")])
def test_both_update_designs_take_finite_steps_and_learn(design: str, preprocess: str) -> None:
    case = small_case("leakyrelu-gl-data", f"defaults.lstm.update_design={design}",
                      f"defaults.lstm.preprocess={preprocess}", "defaults.lstm.update_hidden=16",
                      "defaults.meta_train.trajectories=1")
    opt = build_arm(case, arm_index(case, "lstm-update"))
    assert opt.update_lstm is not None and opt.update_lstm.design == design
    head = opt.update_lstm.head.weight.detach().clone()
    log = meta_train(opt, case.task.to_spec(), case.meta_train.to_spec())
    assert log.meta_steps == 2 and all(math.isfinite(v) for v in log.trajectory_loss)
    # The head always learns; with raw gradients (the paper's `none`) the first cell is saturated by
    # inputs of order 1e5 and gets no gradient, which is why log-sign preprocessing is offered.
    assert not torch.equal(head, opt.update_lstm.head.weight)


def finals(runs: list) -> list[float]:
    """Last loss of each run, a diverged run counting as infinite."""
    return [r.loss[-1] if math.isfinite(r.loss[-1]) else math.inf for r in runs]


@pytest.mark.parametrize("arm", ["lstm-update", "lstm-lr-tele", "lstm-update-tele"])
def test_meta_training_beats_the_untrained_initialisation_on_unseen_seeds(gl_case: MetaCase, arm: str) -> None:
    opt = build_arm(gl_case, arm_index(gl_case, arm))
    task, seeds, steps = gl_case.task.to_spec(), gl_case.test.seeds, gl_case.test.steps
    untrained = finals(meta_test(opt, task, seeds, steps))
    log = meta_train(opt, task, gl_case.meta_train.to_spec())
    trained = finals(meta_test(opt, task, seeds, steps))
    train = gl_case.meta_train
    assert log.meta_steps == train.trajectories * math.ceil(train.steps / train.unroll)
    assert not set(seeds) & set(train.to_spec().seeds)
    assert np.median(trained) < np.median(untrained)


@pytest.mark.parametrize("case_name", ["leakyrelu-gl-data", "relu-rescale"])
def test_every_learned_teleport_preserves_the_batch_loss(case_name: str) -> None:
    case = small_case(case_name, "defaults.meta_train.trajectories=2")
    group = get_group(case.teleport.group)
    tolerance = group.default_tolerance(case.task.to_spec().torch_dtype)
    for name in ("lstm-lr-tele", "lstm-update-tele"):
        opt = build_arm(case, arm_index(case, name))
        log = meta_train(opt, case.task.to_spec(), case.meta_train.to_spec())
        assert len(log.teleports.batch) == case.meta_train.trajectories * case.meta_train.steps
        assert max(log.teleports.batch) <= tolerance
        for run in meta_test(opt, case.task.to_spec(), case.test.seeds, case.test.steps):
            finite_steps = sum(math.isfinite(v) for v in run.loss[:-1])
            assert len(run.teleports.batch) >= finite_steps - 1  # one teleport per step taken
            assert all(change <= tolerance for change in run.teleports.batch)


def test_one_seed_gives_identical_curves(rescale_case: MetaCase) -> None:
    case = rescale_case.model_copy(update={"arms": [a for a in rescale_case.arms if a.name in ("gd", "lstm-lr-tele")]})
    first, second = run_case(case), run_case(case)
    for a, b in zip(first["arms"], second["arms"], strict=True):
        assert a["meta_train"]["trajectory_loss"] == b["meta_train"]["trajectory_loss"]
        assert [r["loss"] for r in a["test"]] == [r["loss"] for r in b["test"]]
        assert [r["teleport_batch"] for r in a["test"]] == [r["teleport_batch"] for r in b["test"]]


def test_run_meta_suite_writes_the_report(tmp_path: Path) -> None:
    exp, suite = load_config(PAPER, overrides_from_options(sets=[*SMALL, "defaults.meta_train.trajectories=2"],
                                                           arms="gd,lstm-update-tele"))
    outcome = run_experiment(exp, suite, RunRequest(out_dir=tmp_path / "out"), Console(file=io.StringIO()))
    assert outcome.report_path is not None
    text = outcome.report_path.read_text()
    assert "## Case `leakyrelu-gl-data`" in text and "## Case `relu-rescale`" in text
    assert "### Teleport invariance" in text and "LSTM(update, tele)" in text and "**Shrunk**" in text
    for name in ("leakyrelu-gl-data", "relu-rescale"):
        for kind in ("loss", "meta-training", "teleport-change"):
            png = tmp_path / "out" / f"{name}-{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({png.name})" in text
    assert (tmp_path / "out" / "results.json").stat().st_size > 0


def test_paper_suite_is_the_papers_configuration() -> None:
    suite = load_meta_suite(PAPER)
    assert [c.name for c in suite.cases] == ["leakyrelu-gl-data", "relu-rescale"]
    gl, relu = suite.cases
    assert (gl.task.widths, gl.task.activation, gl.task.negative_slope) == ([20, 20, 20], "leaky_relu", 0.1)
    assert (gl.meta_train.steps, gl.meta_train.unroll, len(gl.test.seeds)) == (100, 10, 20)  # 20 unseen seeds: enough for the paired verdicts
    assert [(a.update, a.teleport) for a in gl.arms] == [("gd", False), ("lstm", False), ("learned_lr", True),
                                                         ("lstm", True)]
    assert gl.arms[0].lr == 3e-4 and gl.teleport.group == "gl-data" and relu.teleport.group == "rescale"
