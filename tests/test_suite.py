"""Suite loading, merging, overrides, expansion and estimates (in-process; CLI exit codes live in
test_cli_validate.py)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from telebench.config import registry as suite_registry
from telebench.config.overrides import Overrides, overrides_from_options
from telebench.errors import UserError
from telebench.experiments.pairs.estimate import estimate_seconds
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.pairs.plan import expand
from telebench.experiments.pairs.schema import Suite
from telebench.experiments.pairs.spec import ScheduleSpec, TrialSpec
from telebench.experiments.registry import load_config
from telebench.training.specs import thaw

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "suites" / "quickstart.yaml"

BASE = {
    "name": "t",
    "defaults": {"budget": {"steps": 40}, "eval_every": 10, "calibration_seeds": [100]},
    "cases": [
        {
            "name": "digits",
            "dataset": {"name": "digits"},
            "model": {"widths": [64, 8, 10], "activation": "relu"},
            "optimizers": [{"name": "sgd", "lr": 0.1}],
        }
    ],
}


def compared(plan: list[TrialSpec]) -> list[TrialSpec]:
    """The trials that are compared: the plan without its calibration baselines."""
    return [t for t in plan if t.role == "compared"]


def other_notes(suite: Suite) -> list[str]:
    """The suite's notes but the advice on seed counts (BASE has one seed, so it always gets that)."""
    return [n for n in suite.notes if "paired seeds" not in n]


def write(tmp_path: Path, doc: dict | str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def load(tmp_path: Path, *sets: str, **overrides: object):
    return load_suite(write(tmp_path, BASE), Overrides(sets=list(sets), **overrides))  # type: ignore[arg-type]


def error(tmp_path: Path, *sets: str, **overrides: object) -> str:
    with pytest.raises(UserError) as info:
        load(tmp_path, *sets, **overrides)
    return str(info.value)


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Device checks see a machine without CUDA unless a test says otherwise."""
    monkeypatch.setattr(suite_registry, "cuda_device_count", lambda: 0)


# ---- the bundled suite ------------------------------------------------------------------------------


def test_quickstart_plan_is_seed_major_with_adjacent_arms() -> None:
    suite = load_suite(QUICKSTART)
    everything = expand(suite)
    plan = compared(everything)
    assert len(plan) == 2 * 2 * 10 * 3  # cases x optimizers x seeds x arms
    calibration = [t for t in everything if t.role == "calibration"]
    assert len(calibration) == 2 * 2 * 5 and {t.arm_kind for t in calibration} == {"baseline"}
    assert {t.seed for t in calibration}.isdisjoint(t.seed for t in plan)  # never a compared seed
    assert {t.arm for t in plan} == {"baseline", "teleport", "reset-only"}
    assert {t.optimizer.name for t in plan} == {"sgd", "adam"}
    assert {t.dataset.name for t in plan} <= {"digits", "synthetic-regression"}
    # the arms of one pair key are adjacent, in the suite's arm order
    for start in range(0, len(plan), 3):
        chunk = plan[start : start + 3]
        assert len({t.pair_key for t in chunk}) == 1
        assert [t.arm for t in chunk] == ["baseline", "teleport", "reset-only"]
    keys = [t.pair_key for t in plan[::3]]
    assert keys == sorted(keys, key=lambda k: (["digits-relu", "regression-linear"].index(k[0]),
                                               ["sgd", "adam"].index(k[1]), k[2], k[3]))
    assert len({t.id for t in plan}) == len(plan) == len(set(plan))


def test_quickstart_arms_carry_the_right_teleport() -> None:
    plan = expand(load_suite(QUICKSTART))
    by_arm = {t.arm: t for t in plan if t.case == "digits-relu" and t.optimizer_label == "sgd" and t.seed == 0}
    assert by_arm["baseline"].teleport is None
    teleport, reset = by_arm["teleport"].teleport, by_arm["reset-only"].teleport
    assert teleport is not None and reset is not None
    assert teleport == reset  # reset-only keeps the schedule and policy of the teleport arm
    assert teleport.group == "rescale" and teleport.schedule == ScheduleSpec(kind="at_steps", steps=(0, 50, 100))
    assert by_arm["reset-only"].arm_kind == "reset-only"
    linear = next(t for t in plan if t.case == "regression-linear" and t.arm == "teleport")
    assert linear.teleport is not None and linear.teleport.group == "linear"
    assert thaw(linear.dataset.params) == {"n_features": 16, "n_outputs": 4}


def test_quickstart_estimate_is_within_the_issue_budget() -> None:
    assert 1.0 < estimate_seconds(expand(load_suite(QUICKSTART))) < 60.0


# ---- merging ------------------------------------------------------------------------------------------


def test_teleport_settings_merge_defaults_case_optimizer_arm(tmp_path: Path) -> None:
    doc = yaml.safe_load(textwrap.dedent("""
        name: merge
        defaults:
          budget: {steps: 100}
          calibration_seeds: [100]
          teleport: {lr: 0.1, steps: 3, batch_size: 50, cap: 5.0, schedule: {every: 20}}
        cases:
          - name: c
            dataset: {name: digits}
            model: {widths: [64, 10], activation: relu}
            teleport: {steps: 4, cap: null}
            arms:
              - baseline
              - teleport
              - {name: keep, kind: teleport, teleport: {state_policy: keep, lr: 0.3}}
            optimizers:
              - {name: sgd, lr: 0.1, teleport: {lr: 0.2, schedule: {first_minibatches: 8, epochs: [2]}}}
              - {name: adam, lr: 0.001}
    """))
    plan = expand(load_suite(write(tmp_path, doc)))
    tp = {(t.optimizer_label, t.arm): t.teleport for t in plan}
    sgd, sgd_keep, adam = tp[("sgd", "teleport")], tp[("sgd", "keep")], tp[("adam", "teleport")]
    assert sgd is not None and sgd_keep is not None and adam is not None
    assert (sgd.lr, sgd.steps, sgd.batch_size, sgd.cap) == (0.2, 4, 50, None)  # explicit null wins over 5.0
    assert sgd.schedule == ScheduleSpec(kind="first_minibatches", count=8, epochs=(2,))
    assert (sgd_keep.lr, sgd_keep.state_policy, sgd_keep.schedule.kind) == (0.3, "keep", "first_minibatches")
    assert (adam.lr, adam.schedule) == (0.1, ScheduleSpec(kind="every", every=20, start=0))
    assert tp[("adam", "baseline")] is None


def test_model_merges_key_by_key_and_other_keys_replace_whole(tmp_path: Path) -> None:
    doc = {**BASE, "defaults": {**BASE["defaults"], "model": {"activation": "leaky_relu", "bias": False},
                                "seeds": [5, 6], "target": {"metric": "val_loss", "value": 0.5}}}
    doc["cases"] = [{**BASE["cases"][0], "model": {"widths": [64, 10]}, "seeds": [7]}]
    (trial, *_) = expand(load_suite(write(tmp_path, doc)))
    assert (trial.model.widths, trial.model.activation, trial.model.bias) == ((64, 10), "leaky_relu", False)
    assert trial.seed == 7
    assert (trial.target.kind, trial.target.metric, trial.target.value) == ("absolute", "val_loss", 0.5)


@pytest.mark.parametrize(("schedule", "spec"), [
    ({"at_steps": [50, 0, 50]}, ScheduleSpec(kind="at_steps", steps=(0, 50))),
    ({"at_epochs": [1]}, ScheduleSpec(kind="at_epochs", epochs=(1,))),
    ({"every": 25, "start": 5}, ScheduleSpec(kind="every", every=25, start=5)),
    ({"first_minibatches": 8}, ScheduleSpec(kind="first_minibatches", count=8, epochs=(0,))),
])
def test_schedule_forms(tmp_path: Path, schedule: dict, spec: ScheduleSpec) -> None:
    suite = load(tmp_path, f"defaults.teleport.schedule={yaml.safe_dump(schedule, default_flow_style=True).strip()}")
    teleports = [t.teleport for t in expand(suite) if t.arm == "teleport"]
    assert teleports and all(tp is not None and tp.schedule == spec for tp in teleports)


@pytest.mark.parametrize(("budget", "kind", "value"), [("{steps: 7}", "steps", 7.0), ("{epochs: 1.5}", "epochs", 1.5),
                                                       ("{seconds: 2}", "seconds", 2.0)])
def test_budget_forms(tmp_path: Path, budget: str, kind: str, value: float) -> None:
    trial = expand(load(tmp_path, f"defaults.budget={budget}"))[0]
    assert (trial.budget.kind, trial.budget.value) == (kind, value)


def test_duplicate_optimizer_names_get_lr_labels(tmp_path: Path) -> None:
    suite = load(tmp_path, "cases[0].optimizers[1]={name: sgd, lr: 0.01}", "cases[0].optimizers[2]={name: adam, lr: 1e-3}")
    assert [o.label for o in suite.cases[0].optimizers] == ["sgd-lr0.1", "sgd-lr0.01", "adam"]


def test_string_numbers_from_yaml_are_accepted(tmp_path: Path) -> None:
    # PyYAML reads 1e-4 (no dot) as a string; validation still takes it as a number
    suite = load(tmp_path, "cases[0].optimizers[0].lr='1e-4'")
    assert suite.cases[0].optimizers[0].lr == pytest.approx(1e-4)


# ---- overrides --------------------------------------------------------------------------------------


def test_overrides_replace_values_in_every_case(tmp_path: Path) -> None:
    ov = overrides_from_options(seeds="0-2,7", devices="cpu", budget_steps=5, eval_every=1)
    plan = expand(load_suite(write(tmp_path, BASE), ov))
    assert sorted({t.seed for t in compared(plan)}) == [0, 1, 2, 7]
    assert {(t.budget.kind, t.budget.value, t.eval_every, t.device) for t in plan} == {("steps", 5.0, 1, "cpu")}


def test_arms_override_selects_labels_and_adds_builtin_kinds(tmp_path: Path) -> None:
    suite = load(tmp_path, "cases[0].arms=[baseline, teleport, {name: keep, kind: teleport}]",
                 arms=["baseline", "keep", "random-teleport"])
    assert [(a.name, a.kind) for a in suite.cases[0].arms] == [
        ("baseline", "baseline"), ("keep", "teleport"), ("random-teleport", "random-teleport")]


def test_arms_override_keeps_key_paths_and_checks_added_arms(tmp_path: Path) -> None:
    text = error(tmp_path, "cases[0].arms=[baseline, teleport, {name: big, kind: teleport, teleport: {batch_size: 2000}}]",
                 arms=["baseline", "big"])
    assert "cases[0].arms[2].teleport.batch_size: teleport batch 2000" in text
    text = error(tmp_path, "cases[0].model.activation=tanh", "cases[0].arms=[baseline]", arms=["baseline", "random-teleport"])
    assert "cases[0].model.activation: 'tanh' does not fit the default teleport group 'rescale'" in text


def test_cases_override_filters_by_name(tmp_path: Path) -> None:
    suite = load(tmp_path, "cases[1]={name: other, dataset: {name: digits}, model: {widths: [64, 10], "
                 "activation: relu}, optimizers: [{name: adam, lr: 0.001}]}", cases=["other"])
    assert [c.name for c in suite.cases] == ["other"]


def test_set_indexes_by_name_and_creates_mappings(tmp_path: Path) -> None:
    suite = load(tmp_path, "cases[digits].optimizers[sgd].lr=0.5", "cases[0].teleport.lr=0.3")
    opt = suite.cases[0].optimizers[0]
    assert opt.lr == 0.5
    assert compared(expand(suite))[1].teleport.lr == 0.3  # type: ignore[union-attr]


@pytest.mark.parametrize(("options", "message"), [
    ({"seeds": "0,x"}, "--seeds: cannot read 'x'"),
    ({"seeds": "1,1"}, "--seeds: give distinct"),
    ({"devices": "gpu"}, "--devices: unknown device 'gpu'"),
    ({"budget_steps": 0}, "--budget-steps: must be a positive number"),
    ({"eval_every": -1}, "--eval-every: must be a positive number"),
])
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        overrides_from_options(**options)


@pytest.mark.parametrize(("sets", "overrides", "message"), [
    (["nokey"], {}, "expected KEY.PATH=VALUE"),
    (["cases[3].x=1"], {}, "cases has no item '3'"),
    (["name.x=1"], {}, "name is not a mapping"),
    (["cases.x=1"], {}, "cases is not a mapping"),
    (["defaults.seeds=[1"], {}, "the value is not valid YAML"),
    ([], {"arms": ["telport"]}, "--arms: .* defines no arm 'telport'; did you mean 'teleport'"),
    ([], {"arms": ["teleport"]}, r"cases\[0\]\.target: a baseline_final target needs a baseline arm; keep baseline in --arms"),
    ([], {"cases": ["digit"]}, "--cases: .* has unknown case 'digit'; did you mean 'digits'"),
])
def test_bad_overrides(tmp_path: Path, sets: list[str], overrides: dict, message: str) -> None:
    assert re.search(message, error(tmp_path, *sets, **overrides))


# ---- errors name the key the user wrote ---------------------------------------------------------------


@pytest.mark.parametrize(("sets", "message"), [
    (["defaults.teleport.batch_size=5000"],
     "defaults.teleport.batch_size: teleport batch 5000 is larger than the 1258 training samples of digits"),
    (["cases[0].teleport.batch_size=5000"], r"cases\[0\]\.teleport\.batch_size: teleport batch 5000"),
    (["cases[0].arms=[baseline, {name: big, kind: teleport, teleport: {batch_size: 2000}}]"],
     r"cases\[0\]\.arms\[1\]\.teleport\.batch_size: teleport batch 2000"),
    (["cases[0].batch_size=2000"], r"cases\[0\]\.batch_size: 2000 is larger than the 1258 training samples"),
    (["defaults.model={widths: [63, 10]}", "cases[0].model={activation: relu}"],
     r"defaults\.model\.widths: the first width must be the 64 input features of digits, got 63"),
    (["cases[0].model.widths=[64, 8, 3]"], r"cases\[0\]\.model\.widths: the last width must be the 10 outputs"),
    (["cases[0].model.activation=tanh"],
     r"cases\[0\]\.model\.activation: 'tanh' does not fit the default teleport group 'rescale'"),
    (["cases[0].optimizers[0].teleport={group: gl-data}"],
     r"cases\[0\]\.optimizers\[0\]\.teleport\.group: group 'gl-data' needs a leaky_relu activation"),
    (["cases[0].model={widths: [64, 10], activation: leaky_relu, negative_slope: 0}", "defaults.teleport.group=gl-data"],
     r"cases\[0\]\.model\.negative_slope: group 'gl-data' needs an invertible activation"),
    (["cases[0].optimizers[0].kwargs={momentm: 0.9}"],
     r"cases\[0\]\.optimizers\[0\]\.kwargs\.momentm: sgd takes no argument 'momentm'; did you mean 'momentum'"),
    (["cases[0].optimizers[1]={name: sgd, lr: 0.1}"], r"optimizer label 'sgd-lr0.1' repeats optimizers\[0\]"),
    (["cases[0].arms=[baseline, teleport, teleport]"], r"cases\[0\]\.arms\[2\]: arm label 'teleport' repeats"),
    (["cases[1]={name: digits}"], r"cases\[1\]\.dataset: is missing; set `dataset` in the case or under defaults"),
    (["cases[0].dataset={name: digits, n_trian: 5}"], r"cases\[0\]\.dataset: dataset 'digits' has no parameter 'n_trian'"),
    (["cases[0].arms=[{name: tk}]"], r"cases\[0\]\.arms\[0\]: arm 'tk' needs a kind"),
    (["cases[0].arms=[baseline, {name: baseline2, kind: baseline, teleport: {lr: 1}}]"],
     "a baseline arm never teleports"),
    (["cases[0].teleport.schedule={every: 5, at_steps: [1]}"],
     r"cases\[0\]\.teleport\.schedule: give exactly one of at_steps, at_epochs, every or first_minibatches"),
    (["defaults.budget={steps: 3, epochs: 1}"], "defaults.budget: give exactly one of steps, epochs or seconds"),
    (["defaults.target={value: 1.5, metric: val_accuracy}"], "a val_accuracy target must lie between 0 and 1"),
    (["cases[0].seeds=[1, 1]"], "seeds repeat"),
    (["cases[0].devices=[gpu]"], "unknown device 'gpu'; use cpu, cuda, cuda:N or auto"),
    (["cases[0].devices=[cuda]"], r"cases\[0\]\.devices: 'cuda' was asked for but no CUDA device is visible"),
    (["seeds=[1]"], "unknown key 'seeds'; case settings go under defaults or in a case, e.g. defaults.seeds"),
    (["defaults.teleport.objective=grad-norm"], "unknown objective 'grad-norm'; did you mean 'grad_norm'"),
    (["defaults.teleport.state_policy=transprt"], "must be one of 'reset', 'keep' or 'transport', got 'transprt'"),
    (["cases[0].optimizers=[]"], r"cases\[0\]\.optimizers: needs at least 1 item"),
    (["cases[1]={name: digits, dataset: {name: digits}, model: {widths: [64, 10]}, optimizers: [{name: sgd, lr: 1}]}"],
     r"cases\[1\]\.name: case name 'digits' repeats cases\[0\]; give each case a distinct name"),
    (["cases[0].optimizers[0]={name: sgd, lrr: 0.1}"], r"cases\[0\]\.optimizers\[0\]\.lrr: unknown key 'lrr'; did you mean 'lr'"),
])
def test_cross_key_errors_name_the_written_key(tmp_path: Path, sets: list[str], message: str) -> None:
    text = error(tmp_path, *sets)
    assert re.search(message, text), text
    assert text.startswith(str(tmp_path / "suite.yaml")) and text.endswith(".")


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"line 2, column 1 \(key 'name' appears twice"):
        load_suite(write(tmp_path, "name: a\nname: b\ncases: []\n"))


def test_several_problems_are_counted(tmp_path: Path) -> None:
    text = error(tmp_path, "cases[0].batch_size=0", "cases[0].eval_every=0")
    assert text.endswith("(1 more problem after this one).")


def test_reset_only_arms_do_not_need_a_fitting_group(tmp_path: Path) -> None:
    suite = load(tmp_path, "cases[0].model.activation=tanh", "cases[0].arms=[baseline, reset-only]")
    assert [t.arm for t in compared(expand(suite))] == ["baseline", "reset-only"]


def test_teleports_past_the_budget_get_one_note(tmp_path: Path) -> None:
    suite = load(tmp_path, "defaults.teleport.schedule={at_steps: [0, 40, 99]}",
                 "cases[0].optimizers[1]={name: adam, lr: 0.001}")
    assert other_notes(suite) == ["defaults.teleport.schedule: steps [40, 99] lie past the budget of 40 steps and never happen."]


# ---- devices ------------------------------------------------------------------------------------------


def test_auto_falls_back_to_cpu_with_a_note(tmp_path: Path) -> None:
    suite = load(tmp_path, "cases[0].devices=[auto, cpu]")
    assert suite.cases[0].devices == ["cpu"]
    assert other_notes(suite) == ["cases[0].devices: auto runs on cpu, because no CUDA device is visible."]


def test_auto_and_cuda_index_with_one_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite_registry, "cuda_device_count", lambda: 1)
    suite = load(tmp_path, "cases[0].devices=[auto, cuda:0, cpu]")
    assert suite.cases[0].devices == ["cuda", "cuda:0", "cpu"] and not other_notes(suite)
    assert "only 1 CUDA device(s) exist" in error(tmp_path, "cases[0].devices=[cuda:1]")
    assert error(tmp_path, devices=["cuda:3"]).endswith(": --devices: 'cuda:3' was asked for but only 1 CUDA "
                                                        "device(s) exist; use cpu, or auto to run on CUDA only where it exists.")


def test_device_check_can_be_skipped_for_planning(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, BASE), Overrides(devices=["cuda"]), check_devices=False)
    assert suite.cases[0].devices == ["cuda"]


def test_validation_works_without_the_owning_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry lookups fall back to the literal lists (and whole-file sizes) when a module is missing."""
    monkeypatch.setattr(suite_registry, "_lookup", lambda module, attr: None)
    assert len(compared(expand(load(tmp_path)))) == 2
    assert "larger than the 1797 training samples" in error(tmp_path, "defaults.teleport.batch_size=1798")
    assert "unknown group 'so3'" in error(tmp_path, "defaults.teleport.group=so3")


# ---- estimate ----------------------------------------------------------------------------------------


def _trial(plan: list[TrialSpec], arm: str) -> TrialSpec:
    return next(t for t in plan if t.arm == arm)


def test_estimate_grows_with_steps_and_teleports(tmp_path: Path) -> None:
    short = expand(load(tmp_path, "defaults.budget={steps: 100}"))
    long = expand(load(tmp_path, "defaults.budget={steps: 1000}"))
    assert 3 < estimate_seconds(long) / estimate_seconds(short) < 11
    many = expand(load(tmp_path, "defaults.budget={steps: 100}", "defaults.teleport.schedule={every: 1}"))
    assert estimate_seconds([_trial(many, "teleport")]) > 2 * estimate_seconds([_trial(short, "teleport")])
    assert estimate_seconds([_trial(short, "teleport")]) > estimate_seconds([_trial(short, "baseline")])
    one_epoch = expand(load(tmp_path, "defaults.budget={epochs: 1}", "defaults.batch_size=1258"))
    assert estimate_seconds(one_epoch) < estimate_seconds(short)


def test_a_study_given_to_the_train_loader_points_at_run_which_loads_every_kind(tmp_path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("kind: correlation\nname: s\n")
    with pytest.raises(UserError, match="kind: correlation.*telebench run"):
        load_suite(path)
    with pytest.raises(UserError, match="cases"):  # the study's own schema answers, naming its missing key
        load_config(path)
    path.write_text("kind: corelation\nname: s\n")
    with pytest.raises(UserError, match="did you mean 'correlation'"):
        load_config(path)


def test_a_bad_objective_option_is_a_key_path_error(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        name: bad-objective
        defaults:
          seeds: [0]
          calibration_seeds: [100]
          devices: [cpu]
          batch_size: 32
          budget: {steps: 10}
          eval_every: 5
          target: {metric: train_loss, baseline_final: true}
          arms: [baseline, teleport]
          teleport: {group: rescale, objective: sharpness, objective_params: {radius: 0.5}, batch_size: 100}
        cases:
          - name: d
            dataset: {name: digits}
            model: {widths: [64, 16, 10], activation: relu}
            optimizers: [{name: sgd, lr: 0.05}]
        """))
    with pytest.raises(UserError, match=r"defaults\.teleport\.objective_params: .*'radius'"):
        load_suite(path)
