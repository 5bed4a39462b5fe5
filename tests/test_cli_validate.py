"""`telebench validate` and `telebench list` through the real entry point (`python -m telebench`):
every bad suite exits 2 with one sentence naming the file and key, and never a traceback.

Each case is a separate interpreter (that is what checks `main()`'s exit code), so the cases run
concurrently in one module-level pass and the tests only read the results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD = textwrap.dedent("""\
    name: t
    defaults:
      budget: {steps: 20}
      calibration_seeds: [100]
      arms: [baseline, teleport]
    cases:
      - name: a
        dataset: {name: digits}
        model: {widths: [64, 8, 10], activation: relu}
        optimizers: [{name: sgd, lr: 0.1}]
""")


@dataclass(frozen=True)
class Case:
    yaml: str | None  # None: the file does not exist
    args: tuple[str, ...] = ()
    command: str = "validate"


def edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


# name -> (case, exit code, text expected in the output)
CASES: dict[str, tuple[Case, int, str]] = {
    "missing-file": (Case(None), 2, "nope.yaml: no such file; check the path"),
    "not-yaml": (Case(GOOD + "  - name: b\n   bad: [1\n"), 2, "is not valid YAML at line 12, column 4"),
    "unknown-key": (Case(edit("lr: 0.1", "lrr: 0.1")), 2,
                    "cases[0].optimizers[0].lrr: unknown key 'lrr'; did you mean 'lr'?"),
    "wrong-type": (Case(edit("steps: 20", "steps: twenty")), 2,
                   "defaults.budget.steps: must be an integer, got 'twenty'."),
    "unknown-dataset": (Case(edit("name: digits", "name: digit")), 2,
                        "cases[0].dataset.name: unknown dataset 'digit'; did you mean 'digits'? allowed:"),
    "unknown-optimizer": (Case(edit("name: sgd", "name: adamw")), 2,
                          "cases[0].optimizers[0].name: unknown optimizer 'adamw'; did you mean 'adam'?"),
    "unknown-group": (Case(GOOD, ("--set", "defaults.teleport.group=so3")), 2,
                      "defaults.teleport.group: unknown group 'so3'; allowed: rescale, linear, gl-data, channel-rescale, norm-scale, attention, auto."),
    "unknown-arm": (Case(edit("[baseline, teleport]", "[baseline, teleprt]")), 2,
                    "defaults.arms[1]: unknown arm 'teleprt'; did you mean 'teleport'?"),
    "nonpositive-lr": (Case(edit("lr: 0.1", "lr: -0.1")), 2,
                       "cases[0].optimizers[0].lr: must be greater than 0, got -0.1."),
    "nonpositive-steps": (Case(edit("steps: 20", "steps: 0")), 2, "defaults.budget.steps: must be greater than 0"),
    "nonpositive-batch": (Case(GOOD, ("--set", "cases[0].batch_size=0")), 2,
                          "cases[0].batch_size: must be greater than 0, got 0."),
    "teleport-batch-too-big": (Case(GOOD, ("--set", "defaults.teleport.batch_size=5000")), 2,
                               "defaults.teleport.batch_size: teleport batch 5000 is larger than the 1258 training "
                               "samples of digits; use at most 1258."),
    "cuda-missing": (Case(GOOD, ("--devices", "cuda")), 2,
                     "--devices: 'cuda' was asked for but no CUDA device is visible; use cpu, or auto"),
    "auto-notes-cpu": (Case(GOOD, ("--set", "defaults.devices=[auto]")), 0,
                       "note: defaults.devices: auto runs on cpu, because no CUDA device is visible."),
    "quickstart": (Case("quickstart"), 0, "ok — 2 cases, 140 trials"),
    "list": (Case("quickstart", ("--seeds", "0,1", "--arms", "baseline,random-teleport"), "list"), 0,
             "quickstart: 36 trials, "),
}


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def _run(name: str, case: Case, folder: Path) -> Outcome:
    if case.yaml == "quickstart":
        path = ROOT / "suites" / "quickstart.yaml"
    else:
        path = folder / f"{name}.yaml" if case.yaml is not None else folder / "nope.yaml"
        if case.yaml is not None:
            path.write_text(case.yaml)
    # Hide GPUs so the device cases mean the same on every machine; a wide terminal keeps lines whole.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "telebench", case.command, str(path), *case.args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    folder = tmp_path_factory.mktemp("suites")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run, name, case, folder) for name, (case, _, _) in CASES.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_exit_code_and_message(outcomes: dict[str, Outcome], name: str) -> None:
    _, code, expected = CASES[name]
    result = outcomes[name]
    output = " ".join((result.stdout + result.stderr).split())  # undo terminal wrapping
    assert result.code == code, output
    assert expected in output
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", [n for n, (_, code, _) in CASES.items() if code == 2])
def test_errors_are_one_sentence_naming_the_file(outcomes: dict[str, Outcome], name: str) -> None:
    result = outcomes[name]
    message = " ".join(result.stderr.split())
    assert message.startswith("error: ") and message.endswith(".")
    assert result.stdout == ""
    assert f"{name}.yaml" in message or "nope.yaml" in message or "--devices" in message


def test_list_shows_the_plan(outcomes: dict[str, Outcome]) -> None:
    out = outcomes["list"].stdout
    assert "every trial: device cpu, seeds 0,1, budget 300 steps; calibration seeds" in out
    for text in ("digits-relu", "regression-linear", "random-teleport", "sgd 0.05", "adam 0.001"):
        assert text in out
    assert "reset-only" not in out  # --arms dropped it
    assert "rescale random element at steps 0,50,100" in out


# ---- the command line itself: --version, flags in --help, option names ----------------------------


def test_version_and_flags_that_take_no_value_in_help() -> None:
    from typer.testing import CliRunner

    import telebench
    from telebench.cli import app

    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"telebench {telebench.__version__}"
    for command in ([], ["run"], ["profile"], ["export"], ["compare"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}, color=False)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, (command, result.output)  # flags like --help and --no-trace
    profile = runner.invoke(app, ["profile", "--help"], env={"COLUMNS": "200"}).output
    assert "--devices" in profile and "--device " not in profile  # --device is a hidden alias
    assert "<str>" in profile  # options that take a value still say so


def test_profile_takes_devices_as_run_does_and_device_as_an_alias() -> None:
    from typer.testing import CliRunner

    from telebench.cli import app
    from telebench.errors import UserError

    runner = CliRunner()
    for args, message in (
        (["--device", "cpu", "--devices", "cuda"], "--device cpu and --devices cuda disagree"),
        (["--devices", "cpu,cuda"], "--devices cpu,cuda: profile measures on one device"),
        (["--device", "cpu,cuda"], "--devices cpu,cuda: profile measures on one device"),
    ):
        result = runner.invoke(app, ["profile", "--model", "64-8-10", *args])
        assert isinstance(result.exception, UserError) and message in str(result.exception), result.output
