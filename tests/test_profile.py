"""telebench.profile on CPU: phase accounting, memory peaks, the sweep's fit, outputs and options.

Small models and few repeats keep the file fast; nothing asserts a wall time. Timing-derived checks
use the definitions that are robust on a shared 2-core machine (medians over teleports, the fastest
sample per sweep point).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from torch.autograd import DeviceType
from typer.testing import CliRunner

from telebench.cli import app
from telebench.errors import UserError
from telebench.profile.breakdown import TELEPORT, UNATTRIBUTED, profile_teleports, summarize
from telebench.profile.compiled import measure_compiled
from telebench.profile.counts import WorkCounts, count_work
from telebench.profile.memory import MemoryReport, phase_peaks
from telebench.profile.quiet import quiet_profiler
from telebench.profile.render import markdown, plain, print_tables
from telebench.profile.run import CaseProfile, ProfileOptions
from telebench.profile.subject import SubjectOptions, check_subject, parse_widths, subject_from_options
from telebench.profile.sweep import fit_exponent, parse_sweep, parse_sweeps, run_sweep
from telebench.profile.timing import NOISE_RATIO, Samples, Timings, spread_of
from telebench.profile.workload import Workload, load_data
from telebench.symmetry import phases, teleport

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def workload(**options) -> Workload:
    subject = subject_from_options(SubjectOptions(**options))
    check_subject(subject)
    w = Workload.build(subject, load_data(subject))
    w.warm_up(1)
    return w


# ---- phases -----------------------------------------------------------------------------------------
def test_phase_times_add_up_to_the_profiled_teleport():
    """Labelled phases cover ≥ 90 % of the "teleport" range (median over teleports), and phases plus the
    unattributed rest partition it exactly."""
    torch.manual_seed(0)
    w = workload(model="256-64-64-10", group="gl-data", batch=256)
    b = profile_teleports(w, repeat=5)
    assert b.teleports == 5
    assert b.coverage >= 0.9, [(p.label, p.cpu_share) for p in b.phases]
    assert {p.label for p in b.phases} >= {
        phases.OBJECTIVE,
        phases.OBJECTIVE_GRAD,
        phases.APPLY,
        phases.INVARIANCE_CHECK,
        UNATTRIBUTED,
    }
    assert sum(p.cpu_s for p in b.phases) == pytest.approx(b.teleport_s, rel=1e-9)
    assert sum(p.cpu_share for p in b.phases) == pytest.approx(1.0, rel=1e-9)
    assert b.ops_by_cpu and b.ops_by_device == []
    assert all(p.device_share is None for p in b.phases)  # CPU: no device columns


def _event(name, start, end, self_cpu=0.0, self_device=0.0, annotation=False):
    return SimpleNamespace(
        name=name,
        device_type=DeviceType.CPU,
        time_range=SimpleNamespace(start=start, end=end),
        is_user_annotation=annotation,
        self_cpu_time_total=self_cpu,
        self_device_time_total=self_device,
    )


def test_nested_phases_count_once_and_ops_go_to_the_innermost_range():
    events = [
        _event(TELEPORT, 0, 100, annotation=True),
        _event(phases.OBJECTIVE, 10, 60, annotation=True),
        _event(phases.OBJECTIVE_GRAD, 20, 40, annotation=True),  # nested inside the objective
        _event(phases.APPLY, 70, 90, annotation=True),
        _event("aten::mm", 25, 30, self_cpu=5, self_device=3),
        _event("aten::mm", 75, 80, self_cpu=5, self_device=4),
        _event("aten::add", 12, 13, self_cpu=1, self_device=1),
        _event("aten::copy_", 95, 96, self_cpu=1),  # in the teleport, outside every phase
        _event("aten::zeros", 150, 151, self_cpu=9),  # outside the teleport: ignored
    ]
    b = summarize(events, on_device=True)
    by = {p.label: p for p in b.phases}
    assert by[phases.OBJECTIVE].cpu_s == pytest.approx(30e-6)  # 50 µs minus the nested 20
    assert by[phases.OBJECTIVE_GRAD].cpu_s == pytest.approx(20e-6)
    assert by[phases.APPLY].cpu_s == pytest.approx(20e-6)
    assert by[UNATTRIBUTED].cpu_s == pytest.approx(30e-6)
    assert b.coverage == pytest.approx(0.7)
    assert by[phases.OBJECTIVE_GRAD].device_s == pytest.approx(3e-6)
    assert by[phases.OBJECTIVE].device_s == pytest.approx(1e-6)
    assert by[phases.APPLY].device_share == pytest.approx(0.5)
    mm = next(o for o in b.ops_by_cpu if o.name == "aten::mm")
    assert (mm.calls, mm.self_cpu_s) == (2, pytest.approx(10e-6))
    assert "aten::zeros" not in {o.name for o in b.ops_by_cpu}


def test_phase_times_match_key_averages_when_phases_do_not_nest():
    from torch.profiler import profile, record_function

    w = workload(model="32-16-10", group="rescale", activation="relu", batch=64)
    with profile() as prof:
        for _ in range(3):
            w.restore()
            with record_function(TELEPORT):
                w.teleport()
    b = summarize(prof.events(), on_device=False)
    averages = {e.key: e for e in prof.key_averages()}
    spans = [(e.name, e.time_range.start, e.time_range.end) for e in prof.events() if e.name in phases.ALL]
    parents = {
        outer
        for outer, s0, e0 in spans
        for _, s1, e1 in spans
        if (s0, e0) != (s1, e1) and s0 <= s1 and e1 <= e0
    }
    for row in b.phases:
        if row.label == UNATTRIBUTED:
            continue
        inclusive = averages[row.label].cpu_time_total / 1e6
        if row.label in parents:  # a phase with phases nested in it keeps only its own time
            assert row.cpu_s * 3 < inclusive
        else:
            assert row.cpu_s * 3 == pytest.approx(inclusive, rel=1e-6)


# ---- memory -----------------------------------------------------------------------------------------
def test_phase_peaks_measure_the_rise_above_the_start():
    mem = [
        (5, 1000, 1000),
        (15, 1500, 500),
        (18, 1100, -400),
        (25, 4100, 3000),
        (27, 1100, -3000),
        (35, 900, -200),
    ]
    events = [
        {"name": "[memory]", "ts": ts, "args": {"Total Allocated": total, "Bytes": nbytes, "Device Type": 0}}
        for ts, total, nbytes in mem
    ]
    events += [
        {"name": "[memory]", "ts": 16, "args": {"Total Allocated": 10**9, "Bytes": 10**9, "Device Type": 1}}
    ]
    events += [
        {"cat": "user_annotation", "name": TELEPORT, "ts": 10, "dur": 30},
        {"cat": "user_annotation", "name": phases.APPLY, "ts": 20, "dur": 10},
        {"cat": "user_annotation", "name": phases.APPLY, "ts": 12, "dur": 4},
    ]
    peaks = phase_peaks(events, device_type=0, labels=[TELEPORT, phases.APPLY])
    assert peaks[TELEPORT] == 4100 - 1000
    assert peaks[phases.APPLY] == 4100 - 1100  # the larger of its two ranges (500 and 3000)


# ---- sweep ------------------------------------------------------------------------------------------
def test_fit_exponent_recovers_a_power_law():
    fit = fit_exponent([16, 64, 256], [3e-4 * x**1.5 for x in (16, 64, 256)])
    assert fit.exponent == pytest.approx(1.5)
    assert fit.r2 == pytest.approx(1.0)


def test_a_width_sweep_times_every_point_and_fits_the_training_step():
    """The sweep's plumbing: a point per width, timed, and a fitted exponent. How the step really grows
    is a measurement (`telebench profile --sweep width=...`, benchmarks/), not a test: wall time under
    load made the old bound on the exponent fail at random."""
    subject = subject_from_options(
        SubjectOptions(model="64-64-64-10", activation="identity", group="rescale", batch=1024)
    )
    result = run_sweep(subject, parse_sweep("width=64,128,256,512"), warmup=1, repeat=3)
    assert [p.value for p in result.points] == [64, 128, 256, 512]
    assert all(p.train_step_s > 0 for p in result.points)
    assert math.isfinite(result.fits["train_step"].exponent)


@pytest.mark.parametrize("text", ["width", "width=", "width=0,4", "width=8", "height=1,2", "batch=1,x"])
def test_bad_sweeps_are_user_errors(text):
    with pytest.raises(UserError, match="--sweep"):
        parse_sweep(text)


def test_sweeps_parse_and_reject_a_repeated_axis():
    assert [s.spec for s in parse_sweeps(["batch=64,16,64", "depth=1,2"])] == ["batch=16,64", "depth=1,2"]
    with pytest.raises(UserError, match="twice"):
        parse_sweeps(["width=1,2", "width=4,8"])


def test_model_strings():
    assert parse_widths("784-16-10-10") == (784, 16, 10, 10)
    for bad in ("784", "784x16", "784-0-10", "-784-10"):
        with pytest.raises(UserError, match="--model"):
            parse_widths(bad)


# ---- compile ----------------------------------------------------------------------------------------
def test_compile_reports_times_and_a_failing_backend_in_one_line():
    w = workload(model="16-8-4", group="rescale", activation="relu", batch=32)
    rows = {r.name: r for r in measure_compiled(w, backend="eager", repeat=2)}
    assert set(rows) == {"gradient", "train_step", "objective"}
    assert all(r.status == "ok" and r.compiled_s > 0 and r.compile_s >= 0 for r in rows.values())
    failed = measure_compiled(w, backend="no-such-backend", repeat=1)
    assert all(
        r.status == "failed" and "no-such-backend" in r.message and "\n" not in r.message for r in failed
    )


# ---- the command ------------------------------------------------------------------------------------
def test_profile_command_writes_trace_json_markdown_and_plot(tmp_path):
    out = tmp_path / "p"
    result = CliRunner().invoke(
        app,
        [
            "profile",
            "--model",
            "32-16-16-10",
            "--group",
            "gl-data",
            "--batch",
            "64",
            "--warmup",
            "1",
            "--repeat",
            "2",
            "--sweep",
            "width=8,16",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    trace = json.loads((out / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert TELEPORT in names and phases.OBJECTIVE in names
    doc = json.loads((out / "profile.json").read_text())
    assert doc["schema"] == "telebench.profile/1"
    case = doc["cases"][0]
    figures = case["figures"]
    assert figures["grad_evals"]["median"] > 0 and figures["break_even_steps"]["min"] > 0
    assert figures["profiler_overhead"] > 0 and case["memory"]["phases"]
    assert case["work"]["teleport"]["calls"] > case["work"]["gradient"]["calls"] > 0
    assert figures["call_ratio"] > 1 and figures["flop_ratio"] > 1  # gl-data: a gradient and an HVP per step
    assert set(case["sweeps"][0]["fits"]) == {"teleport", "gradient", "train_step"}
    assert {"threads", "tf32_matmul", "device_name", "torch"} <= set(doc["environment"])
    assert (out / "sweep-width.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "profile.md").read_text()
    assert "### Phases" in report and "](sweep-width.png)" in report and "](trace.json)" in report
    assert "Cost of one teleport" in result.output
    assert "What one teleport does" in result.output and "matrix-product GFLOP" in report


def test_work_counts_are_exact_and_tell_the_groups_apart():
    """A rescale teleport does one gradient's matrix products plus vector algebra; gl-data does a
    gradient and a Hessian-vector product per step: many times the calls and the flops. Counts, not
    times, so they repeat exactly."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.LeakyReLU(0.1), torch.nn.Linear(16, 16),
                                torch.nn.LeakyReLU(0.1), torch.nn.Linear(16, 10))
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    start = [p.detach().clone() for p in model.parameters()]

    def restore() -> None:
        with torch.no_grad():
            for p, s in zip(model.parameters(), start, strict=True):
                p.copy_(s)

    def gradient() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    def work(group: str) -> WorkCounts:
        return count_work(lambda: teleport(model, x, y, torch.nn.functional.cross_entropy, group=group, steps=10,
                                           lr=0.05), gradient, restore)

    rescale, gl_data = work("rescale"), work("gl-data")
    assert rescale == work("rescale") and gl_data == work("gl-data")  # exact: the same counts again
    # forward and every weight gradient over all three layers, input gradients for the two above the input
    assert rescale.gradient.flops == 2 * 64 * (2 * (32 * 16 + 16 * 16 + 16 * 10) + (16 * 16 + 16 * 10))
    assert rescale.gradient == gl_data.gradient and rescale.gradient.views > 0
    assert 1 <= rescale.flop_ratio < 1.5 and gl_data.flop_ratio > 5 * rescale.flop_ratio
    assert gl_data.call_ratio > 3 * rescale.call_ratio > 3
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start, strict=True))  # restored afterwards


def test_no_trace_runs_without_the_profiler(tmp_path):
    out = tmp_path / "p"
    result = CliRunner().invoke(
        app,
        [
            "profile",
            "--model",
            "16-8-4",
            "--activation",
            "relu",
            "--batch",
            "32",
            "--warmup",
            "1",
            "--repeat",
            "2",
            "--no-trace",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert not (out / "trace.json").exists()
    case = json.loads((out / "profile.json").read_text())["cases"][0]
    assert case["phases"] is None and case["memory"]["phases"] == []
    assert case["figures"]["teleport_s"]["median"] > 0


def test_suite_case_profiles_its_teleport_arm(tmp_path):
    out = tmp_path / "p"
    suite = str(ROOT / "suites" / "quickstart.yaml")
    result = CliRunner().invoke(
        app, ["profile", suite, "--case", "digits-relu", "--warmup", "1", "--repeat", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    case = json.loads((out / "profile.json").read_text())["cases"][0]
    assert case["name"] == "digits-relu"
    assert case["subject"]["teleport"]["group"] == "rescale" and case["subject"]["model"]["widths"] == [
        64,
        32,
        10,
    ]
    assert case["subject"]["train_batch"] == 32 and case["subject"]["teleport"]["batch_size"] == 200


@pytest.mark.parametrize(
    "args,words",
    [
        (["--model", "16-8-4", "--group", "gl_data"], "did you mean 'gl-data'"),
        (["--model", "16-8-4", "--activation", "tanh", "--group", "rescale"], "--group rescale"),
        (["--model", "16-8-4", "--dataset", "digits"], "does not fit dataset 'digits'"),
        (["--model", "64-8-10", "--dataset", "digits", "--sweep", "batch=10,5000"], "batch size 5000"),
        (["--case", "x", "--model", "16-8-4"], "SUITE"),
        ([], "--model WIDTHS"),
    ],
)
def test_bad_options_are_one_sentence_user_errors(args, words):
    result = CliRunner().invoke(app, ["profile", *args])
    assert isinstance(result.exception, UserError), result.output
    assert words in str(result.exception)


def test_profile_options_defaults_match_the_cli():
    options = ProfileOptions()
    assert (options.warmup, options.repeat, options.profiler) == (2, 5, True)


# ---- threads, noise, stderr and plain text -----------------------------------------------------------
def test_profile_runs_on_one_thread_by_default_and_restores_the_callers(tmp_path):
    from telebench.profile import DEFAULT_THREADS, run_profile

    assert DEFAULT_THREADS == 1  # what `telebench run` uses for train suites
    torch.set_num_threads(2)
    try:
        options = ProfileOptions(warmup=1, repeat=1, profiler=False)
        subject = SubjectOptions(model="16-8-4", activation="relu", batch=32)
        out = run_profile(subject, options, tmp_path / "default", console=Console(file=io.StringIO()))
        assert json.loads((out / "profile.json").read_text())["environment"]["threads"] == 1
        assert torch.get_num_threads() == 2  # the caller's count is back
        out = run_profile(subject, options, tmp_path / "two", threads=2, console=Console(file=io.StringIO()))
        assert json.loads((out / "profile.json").read_text())["environment"]["threads"] == 2
    finally:
        torch.set_num_threads(1)


def _case(teleport_s, gradient_s=(1e-3, 1e-3, 1e-3)) -> CaseProfile:
    subject = subject_from_options(SubjectOptions(model="16-8-4", activation="relu"))
    timings = Timings(Samples(list(teleport_s)), Samples(list(gradient_s), calls=10),
                      Samples([2e-3, 2e-3, 2e-3], calls=10))
    record = {"accepted": True, "relative_loss_change": 1e-7, "tolerance": 1e-4, "objective_before": 1.0,
              "objective_after": 2.0, "steps_taken": 10}
    return CaseProfile(subject, timings, record, MemoryReport(device="cpu"))


def test_a_noisy_timing_is_flagged_in_the_terminal_and_in_profile_md():
    noisy = _case(teleport_s=(0.01, 0.035, 0.04), gradient_s=(1e-3, 1e-3, 5e-3))
    assert noisy.noisy() == {"teleport": pytest.approx(3.5)}  # median/fastest; the gradient's median is calm
    assert noisy.figures()["noisy"] == {"teleport": pytest.approx(3.5)}
    options = ProfileOptions(repeat=3)
    buffer = io.StringIO()
    print_tables([noisy], options, Console(file=buffer, width=200))
    terminal = buffer.getvalue()
    assert "warning: Noisy timings: teleport (median 3.5× the fastest)" in terminal
    report = markdown({"python": "3.11"}, options, [noisy])
    assert "**Warning:** Noisy timings: teleport (median 3.5× the fastest)" in report
    steady = _case(teleport_s=(0.01, 0.019, 0.012))  # under 2×: no warning
    assert steady.noisy() == {}
    buffer = io.StringIO()
    print_tables([steady], options, Console(file=buffer, width=200))
    assert "Noisy" not in buffer.getvalue() and "Warning" not in markdown({}, options, [steady])
    assert spread_of([1.0]) == 1.0 and spread_of([2.0, 1.0, 9.0]) == 2.0 and NOISE_RATIO == 2.0


def test_profile_md_writes_values_as_text_not_python_reprs():
    env = {"devices": ["cpu", "cuda:0"], "device_names": {"cpu": "Test CPU"}, "tf32_matmul": False,
           "threads": 1, "git_commit": None, "empty": []}
    report = markdown(env, ProfileOptions(), [_case(teleport_s=(0.01, 0.011))])
    assert "| devices | cpu, cuda:0 |" in report and "| device names | cpu: Test CPU |" in report
    assert "| tf32 matmul | no |" in report and "| empty | — |" in report and "git commit" not in report
    for repr_mark in ("['", "{'", "']", "'}", "False", "True", "None"):
        assert repr_mark not in report
    assert plain((1, {"a": [True, None]})) == "1, a: yes, —"


def test_quiet_profiler_drops_the_profilers_lines_and_passes_the_rest(capfd):
    with quiet_profiler():
        os.write(2, b"USDT:2026-12-01 11:00:20 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"[W1201 CPUAllocator.cpp:245] Memory block of unknown size was allocated before the "
                    b"profiling started, profiler results will not include the deallocation event\n")
        os.write(2, b"RuntimeError: a real problem\n")
        print("python stderr too", file=sys.stderr)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "USDT" not in err and "Memory block" not in err
    assert err.index("a real problem") < err.index("after") and "python stderr too" in err


def test_profiling_leaves_stderr_clean(capfd):
    w = workload(model="16-8-4", activation="relu", batch=32)
    capfd.readouterr()
    profile_teleports(w, repeat=1)
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_st" not in err and "Memory block" not in err, err
