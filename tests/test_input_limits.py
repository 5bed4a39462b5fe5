"""Bad input is refused before work starts, in one sentence, and never hangs or exhausts memory.

Suite files: regular files only (no devices or FIFOs, which would be read forever or block), a size cap,
a nesting-depth cap and a cap on the values aliases expand to (an alias bomb is refused while it is
composed, before anything is built); merge keys work. Plans: a cap on --seeds and on the units one run
plans. Results files that are folders, or devices, are refused by run, report and compare.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from telebench.commands import suites as suite_commands
from telebench.config import yaml_io
from telebench.config.overrides import MAX_SEEDS, overrides_from_options
from telebench.config.yaml_io import MAX_DEPTH, MAX_VALUES, read_yaml
from telebench.errors import UserError
from telebench.experiments.registry import load_config

ROOT = Path(__file__).resolve().parents[1]

SUITE = textwrap.dedent("""\
    name: limits
    defaults:
      budget: {steps: 20}
      seeds: [0]
      target: {metric: train_loss, value: 0.5}
      arms: [baseline, teleport]
    cases:
      - name: a
        dataset: {name: digits}
        model: {widths: [64, 8, 10], activation: relu}
        optimizers: [{name: sgd, lr: 0.1}]
""")


def bomb(levels: int = 9) -> str:
    """The billion laughs, inside an optimizer's kwargs: about 1 KB that expands to 9**levels strings."""
    lines = ['          l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"          l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return SUITE.replace("optimizers: [{name: sgd, lr: 0.1}]",
                         "optimizers:\n      - name: sgd\n        lr: 0.1\n        kwargs:\n" + "\n".join(lines))


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(UserError) as info:
        call(*args)
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message
    return message


# ---- suite files ----------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_while_it_is_composed_with_little_memory(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, bomb())
    assert path.stat().st_size < 1500
    built: list[int] = []
    original = yaml_io._SuiteLoader.construct_document
    monkeypatch.setattr(yaml_io._SuiteLoader, "construct_document",
                        lambda self, node: built.append(1) or original(self, node))
    tracemalloc.start()
    try:
        message = refusal(load_config, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"holds more than {MAX_VALUES:,} values by line" in message and str(path) in message
    assert built == []  # refused before a single Python object of the document was constructed
    assert peak < 20 << 20  # the bomb would need gigabytes


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    raw = read_yaml(write(tmp_path, bomb(levels=3)))  # 729 strings
    kwargs = raw["cases"][0]["optimizers"][0]["kwargs"]
    assert len(kwargs["l2"]) == 9 and kwargs["l2"][0] == kwargs["l1"]


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    message = refusal(read_yaml, write(tmp_path, "name: &a [1, *a]\n"))
    assert "is used inside its own anchor's value" in message


def test_deep_nesting_is_refused_without_a_recursion_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    message = refusal(read_yaml, path)
    assert f"deeper than {MAX_DEPTH} levels at line 1" in message
    assert read_yaml(write(tmp_path, "a: " + "[" * 20 + "]" * 20 + "\n", "ok.yaml"))  # 21 levels: fine


def test_a_big_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, SUITE + "# " + "x" * (2 << 20) + "\n")
    message = refusal(read_yaml, path)
    assert "over the 1 MiB limit" in message and "TELEBENCH_MAX_SUITE_BYTES" in message
    monkeypatch.setenv("TELEBENCH_MAX_SUITE_BYTES", str(4 << 20))
    assert read_yaml(path)["name"] == "limits"


def _returns_within(seconds: float, call: Any, *args: Any) -> BaseException | None:
    """Run `call` in a thread; fail if it has not returned after `seconds` (it would block forever)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call(*args)
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call.__name__}{args} did not return within {seconds} s"
    return outcome[0]


def test_devices_and_fifos_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)  # nobody writes: reading would block forever
    for path in (Path("/dev/zero"), fifo):
        error = _returns_within(10, read_yaml, path)
        assert isinstance(error, UserError)
        assert str(error) == f"{path}: is not a regular file (a device, pipe or socket); pass the suite's .yaml file."


def test_a_list_as_a_mapping_key_is_one_sentence(tmp_path: Path) -> None:
    for text in ("? [a, b]\n: 1\nname: x\n", SUITE.replace("lr: 0.1", "? [lr]\n: 0.1")):
        message = refusal(read_yaml, write(tmp_path, text))
        assert "a list is used as a key; keys must be plain names" in message


MERGED = textwrap.dedent("""\
    name: merged
    defaults:
      budget: {steps: 20}
      target: {metric: train_loss, value: 0.5}
      arms: [baseline, teleport]
    cases:
      - &first
        name: a
        dataset: {name: digits}
        model: {widths: [64, 8, 10], activation: relu}
        optimizers: [&sgd {name: sgd, lr: 0.1}]
      - <<: *first
        name: b
        optimizers: [{<<: *sgd, lr: 0.2}]
""")


def test_merge_keys_merge_and_a_key_after_a_merge_overrides(tmp_path: Path) -> None:
    raw = read_yaml(write(tmp_path, MERGED))
    first, second = raw["cases"]
    assert second == {**first, "name": "b", "optimizers": [{"name": "sgd", "lr": 0.2}]}
    assert raw == yaml.safe_load(MERGED)  # PyYAML's own reading of merge keys
    exp, config = load_config(write(tmp_path, MERGED, "merged.yaml"), check_devices=False)
    assert [case.name for case in config.cases] == ["a", "b"]


def test_a_merged_node_that_merges_another_keeps_its_own_override(tmp_path: Path) -> None:
    """`mid` is flattened (when `top` merges it) before it is constructed: its `a: 2` is still its own key."""
    text = "base: &base {a: 1}\nx:\n  - &mid {<<: *base, a: 2}\ntop: {<<: *mid, b: 3}\n"
    assert read_yaml(write(tmp_path, text)) == {"base": {"a": 1}, "x": [{"a": 2}], "top": {"a": 2, "b": 3}}


def test_a_key_written_twice_is_still_an_error_next_to_a_merge(tmp_path: Path) -> None:
    text = MERGED.replace("    name: b\n", "    name: b\n    name: c\n")
    message = refusal(read_yaml, write(tmp_path, text))
    assert "key 'name' appears twice in one mapping" in message


# ---- plans ----------------------------------------------------------------------------------------


def test_a_huge_seeds_range_is_refused_before_it_is_expanded() -> None:
    tracemalloc.start()
    try:
        message = refusal(overrides_from_options, "0-300000000")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == (f"--seeds: '0-300000000' gives 300,000,001 seeds, over the limit of {MAX_SEEDS:,} per run; "
                       "give a smaller range, e.g. --seeds 0-9.")
    assert peak < 1 << 20
    assert overrides_from_options("0-4,9").seeds == [0, 1, 2, 3, 4, 9]


def test_a_plan_over_the_unit_limit_is_refused_by_validate_list_and_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(suite_commands, "MAX_PLANNED_UNITS", 10)
    path = str(write(tmp_path, SUITE))
    overrides = overrides_from_options(seeds="0-5")  # 6 seeds x 2 arms = 12 trials
    for call in (lambda: suite_commands.show_suite(path, overrides, plan=False),
                 lambda: suite_commands.show_suite(path, overrides, plan=True),
                 lambda: suite_commands.run_suite(path, overrides)):
        message = refusal(call)
        assert message == (f"{path}: plans 12 trials, over the limit of 10 per run; narrow it with --seeds or "
                           "--cases, or split the suite into several.")
    assert not (tmp_path / "reports").exists()


def test_the_plan_is_counted_not_built_before_the_limit(tmp_path: Path, monkeypatch) -> None:
    from telebench.experiments.pairs import plan as pairs_plan
    from telebench.experiments.registry import load_config

    root = Path(__file__).parents[1] / "suites"
    for name in ("quickstart.yaml", "paper-optimizers-v2.yaml", "real-cnn.yaml"):  # tuning, calibration, arms
        _, suite = load_config(str(root / name), overrides_from_options())
        assert pairs_plan.count_trials(suite) == len(pairs_plan.expand(suite)), name
    monkeypatch.setattr(suite_commands, "MAX_PLANNED_UNITS", 10)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the plan was expanded before its size was checked")

    monkeypatch.setattr(pairs_plan, "expand", never)
    path = str(write(tmp_path, SUITE))
    message = refusal(lambda: suite_commands.run_suite(path, overrides_from_options(seeds="0-5")))
    assert "plans 12 trials, over the limit of 10" in message


# ---- results files that are folders or devices ------------------------------------------------------


def test_results_json_as_a_folder_stops_a_run_before_any_training(tmp_path: Path) -> None:
    from telebench.experiments.base import RunRequest

    out = tmp_path / "out"
    (out / "results.json").mkdir(parents=True)
    message = refusal(suite_commands.run_suite, str(write(tmp_path, SUITE)), overrides_from_options(),
                      lambda name: RunRequest(out_dir=out, report=False))
    assert message == (f"--out {out}: results.json there is a folder, so results cannot be written; move it away, "
                       "or choose another folder with --out.")
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no journal, no lock: nothing ran


def test_a_journal_that_is_a_folder_stops_a_run_before_any_training(tmp_path: Path) -> None:
    from telebench.experiments.base import RunRequest

    out = tmp_path / "out"
    (out / "results.jsonl").mkdir(parents=True)
    message = refusal(suite_commands.run_suite, str(write(tmp_path, SUITE)), overrides_from_options(),
                      lambda name: RunRequest(out_dir=out, report=False))
    assert "results.jsonl: is not a regular file" in message


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "telebench", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_STEP_SUMMARY": ""})


def test_report_and_compare_refuse_folders_and_devices_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "results.json"
    folder.mkdir()
    base = str(ROOT / "tests" / "fixtures" / "compare" / "base.json")
    for args, text in (
        (("report", str(folder)), "is a folder without a results.json; pass the results.json"),
        (("report", "/dev/zero"), "/dev/zero: is not a regular file"),
        (("compare", "/dev/zero", base), "/dev/zero: is not a regular file"),
        (("compare", base, str(folder)), "is a folder"),
        (("export", "/dev/zero"), "/dev/zero: is not a regular file"),
        (("validate", "/dev/zero"), "/dev/zero: is not a regular file"),
        (("validate", "suites/ci-smoke.yaml", "--seeds", "0-300000000"), "--seeds: '0-300000000' gives"),
    ):
        proc = cli(*args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (args, lines)
