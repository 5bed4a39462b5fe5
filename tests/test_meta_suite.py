"""`kind: meta` suites through the real entry point: bad meta settings exit 2 with one sentence naming
the key, a good one validates, and the shared overrides map onto meta cases."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from telebench.config.overrides import overrides_from_options
from telebench.errors import UserError
from telebench.experiments.registry import load_config

ROOT = Path(__file__).resolve().parents[1]

GOOD = {
    "name": "m",
    "kind": "meta",
    "defaults": {
        "task": {"widths": [6, 6, 6], "samples": 6, "heldout": 10},
        "meta_train": {"trajectories": 2, "steps": 10, "unroll": 5},
        "test": {"seeds": [1000, 1001], "steps": 10},
        "arms": [{"name": "gd", "update": "gd"}, {"name": "tele", "update": "learned_lr", "teleport": True}],
    },
    "cases": [{"name": "leaky"}, {"name": "relu", "task": {"activation": "relu"}, "teleport": {"group": "rescale"}}],
}

# The three bad settings through the real entry point (exit code of main()), name ->
# (command, --set edits, text the error must contain).
CLI: dict[str, tuple[str, list[str], str]] = {
    "unroll-longer-than-trajectory": (
        "run", ["defaults.meta_train.unroll=20"],
        "defaults.meta_train.unroll: an unroll of 20 steps is longer than the 10-step trajectory "
        "(meta_train.steps); use an unroll of at most 10."),
    "zero-trajectories": ("validate", ["defaults.meta_train.trajectories=0"],
                          "defaults.meta_train.trajectories: must be greater than 0, got 0."),
    "group-does-not-fit-activation": (
        "validate", ["cases[1].teleport.group=gl-data"],
        "cases[1].teleport.group: group 'gl-data' does not fit cases[1].task.activation 'relu': it needs an "
        "invertible activation"),
}

# More bad settings, in-process: --set edits -> text of the UserError.
BAD: dict[str, tuple[list[str], str]] = {
    "unroll-longer-in-one-case": (
        ["cases[1].meta_train={steps: 4}"],
        "defaults.meta_train.unroll: an unroll of 5 steps is longer than the 4-step trajectory"),
    "negative-test-steps": (["cases[0].test={steps: -3}"], "cases[0].test.steps: must be greater than 0, got -3."),
    "zero-hidden": (["defaults.lstm={update_hidden: 0}"], "defaults.lstm.update_hidden: must be greater than 0, got 0."),
    "no-test-seeds": (["defaults.test.seeds=[]"], "defaults.test.seeds: needs at least 1 item(s)."),
    "activation-does-not-fit-default-group": (
        ["cases[0].task={activation: relu}"],
        "cases[0].task.activation: 'relu' does not fit the default teleport group 'gl-data': it needs an "
        "invertible activation"),
    "batch-wider-than-layer": (
        ["defaults.task.samples=8"],
        "defaults.task.samples: group 'gl-data' preserves the loss on a batch of 8 only up to least squares"),
    "learned-lr-without-teleport": (
        ["defaults.arms[1].teleport=false"],
        "defaults.arms[1]: update 'learned_lr' takes its step size from the teleport LSTM"),
    "first-step-size-outside-range": (
        ["defaults.arms[1].lr=0.1"], "defaults.arms[1].lr: the first step size 0.1 of a learned_lr arm must lie"),
    "test-seed-seen-in-training": (
        ["defaults.test.seeds=[1, 1000]"], "defaults.test.seeds: seed 1 is also a meta-training trajectory"),
    "unknown-key": (["defaults.meta_train.unrol=3"], "defaults.meta_train.unrol: unknown key 'unrol'; did you mean 'unroll'?"),
    "unknown-update": (["defaults.arms[0].update=adam"], "defaults.arms[0].update: unknown update 'adam'"),
    "repeated-arm": (["defaults.arms[1].name=gd"], "defaults.arms[1].name: arm name 'gd' repeats arms[0]"),
    "bad-kind": (["kind=metaa"], "kind: 'metaa' is not an experiment kind; did you mean 'meta'?"),
}


def write(tmp_path: Path, doc: dict, name: str = "suite") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run(tmp: Path, name: str, command: str, sets: list[str]) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "telebench", command, str(write(tmp, GOOD, name))]
    if command == "run":
        args += ["--out", str(tmp / name)]
    for edit in sets:
        args += ["--set", edit]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each suite in its own interpreter, concurrently (that is what checks main()'s exit code)."""
    tmp = tmp_path_factory.mktemp("meta-suites")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, tmp, name, cmd, sets) for name, (cmd, sets, _) in CLI.items()}
        futures["good"] = pool.submit(_run, tmp, "good", "validate", [])
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", list(CLI))
def test_bad_meta_settings_exit_2_with_one_sentence(outcomes: dict, name: str) -> None:
    result = outcomes[name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith(f"error: {Path(result.args[4])}: ") and CLI[name][2] in message


def test_good_meta_suite_validates(outcomes: dict) -> None:
    assert outcomes["good"].returncode == 0, outcomes["good"].stderr


@pytest.mark.parametrize("name", list(BAD))
def test_bad_meta_settings_name_the_key(tmp_path: Path, name: str) -> None:
    sets, expected = BAD[name]
    path = write(tmp_path, GOOD)
    with pytest.raises(UserError) as caught:
        load_config(path, overrides_from_options(sets=sets))
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


def test_the_loader_dispatches_a_meta_suite_to_its_kind(tmp_path: Path) -> None:
    exp, suite = load_config(write(tmp_path, GOOD))
    assert exp.kind == "meta" and [len(task) for task in exp.plan(suite)] == [1, 1]  # a task is one whole case
    leaky, relu = suite.cases
    assert leaky.teleport.group == "gl-data" and relu.teleport.group == "rescale"
    assert relu.task.widths == [6, 6, 6]  # mappings merge key by key over the defaults
    assert [a.to_spec().lr for a in leaky.arms] == [3e-4, 1e-4]  # the paper's GD and first learned step sizes


def test_overrides_map_onto_meta_cases(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    suite = load_config(path, overrides_from_options(seeds="50-52", budget_steps=7, cases="relu", arms="tele"))[1]
    (case,) = suite.cases
    assert (case.name, case.test.seeds, case.test.steps, [a.name for a in case.arms]) == ("relu", [50, 51, 52], 7,
                                                                                         ["tele"])
    assert any("--seeds" in note for note in suite.notes)
    with pytest.raises(UserError, match="--eval-every: .* records the loss at every step"):
        load_config(path, overrides_from_options(eval_every=5))
    with pytest.raises(UserError, match="--arms: .* defines no arm 'nope'"):
        load_config(path, overrides_from_options(arms="nope"))
    with pytest.raises(UserError, match="test.seeds: seed 1 is also a meta-training trajectory"):
        load_config(path, overrides_from_options(seeds="1"))
