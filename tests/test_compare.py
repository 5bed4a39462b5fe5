"""`telebench compare` end to end, on the committed fixtures in tests/fixtures/compare/.

Exit codes 0 and 1 are checked through typer's CliRunner; usage errors (exit 2) through a real
`python -m telebench` process, since only `cli.main()` turns a UserError into exit 2.
Regenerate the fixtures with `python tests/fixtures/compare/make_fixtures.py`; the expected markdown
files under expected/ are the command's own output, reviewed by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telebench.analysis.compare.decision import Verdict
from telebench.analysis.compare.engine import compare_files
from telebench.analysis.compare.thresholds import parse_threshold
from telebench.cli import app
from telebench.errors import UserError
from telebench.render.compare import render_markdown, render_table

FIXTURES = Path(__file__).parent / "fixtures" / "compare"
runner = CliRunner()


def fx(name: str) -> Path:
    return FIXTURES / name


def compare(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["compare", *args], env={"GITHUB_STEP_SUMMARY": "", **(env or {})})


def verdicts(report, arm: str = "teleport") -> dict[str, Verdict]:
    return {row.metric: row.verdict for row in report.rows if row.key[1] == arm}


# ---- telebench results ----------------------------------------------------------------------------


def test_identical_files_pass() -> None:
    result = compare(str(fx("base.json")), str(fx("base.json")))
    assert result.exit_code == 0, result.output
    assert "passed: all unchanged" in result.output
    report = compare_files(fx("base.json"), fx("base.json"), [])
    assert report.exit_code == 0 and report.warnings == [] and report.only_in_base == report.only_in_new == []
    assert {row.verdict for row in report.rows} == {Verdict.UNCHANGED}
    # defaults: time, steps and misses on both arms, the speed-up on the teleport arm only
    assert [(row.key[1], row.metric) for row in report.rows] == [
        ("baseline", "time_to_target"), ("baseline", "steps_to_target"), ("baseline", "misses"),
        ("teleport", "time_to_target"), ("teleport", "steps_to_target"), ("teleport", "misses"),
        ("teleport", "speedup_time"),
    ]


def test_time_to_target_20_percent_worse_on_five_seeds_regresses() -> None:
    result = compare(str(fx("base.json")), str(fx("slower.json")))
    assert result.exit_code == 1, result.output
    assert "regressed" in result.output
    report = compare_files(fx("base.json"), fx("slower.json"), [])
    row = next(r for r in report.rows if r.key[1] == "teleport" and r.metric == "time_to_target")
    assert row.verdict is Verdict.REGRESSED
    assert row.change == pytest.approx(0.20) and row.p_value == pytest.approx(2 / 252)
    assert (row.n_base, row.n_new) == (5, 5)
    assert verdicts(report)["speedup_time"] is Verdict.REGRESSED  # paired baseline/teleport ratios fell
    assert verdicts(report, "baseline")["time_to_target"] is Verdict.UNCHANGED


def test_20_percent_worse_on_one_seed_fails_and_says_no_test_was_possible() -> None:
    result = compare(str(fx("one_seed_base.json")), str(fx("one_seed_slower.json")))
    assert result.exit_code == 1, result.output
    report = compare_files(fx("one_seed_base.json"), fx("one_seed_slower.json"), [parse_threshold("time_to_target:+10%")])
    (baseline, teleport) = report.rows
    assert baseline.verdict is Verdict.UNCHANGED
    assert teleport.verdict is Verdict.REGRESSED and teleport.p_value is None
    assert teleport.note == "1 vs 1 seeds: too few for a significance test, counted without one"


def test_a_noisy_difference_is_marked_noisy_and_passes() -> None:
    result = compare(str(fx("base.json")), str(fx("noisy.json")))
    assert result.exit_code == 0, result.output
    assert "noisy" in result.output
    report = compare_files(fx("base.json"), fx("noisy.json"), [])
    row = next(r for r in report.rows if r.key[1] == "teleport" and r.metric == "time_to_target")
    assert row.verdict is Verdict.NOISY and row.change > 0.10 and row.p_value > 0.01


def test_a_new_miss_regresses_the_miss_count_and_shows_as_infinite() -> None:
    report = compare_files(
        fx("base.json"), fx("miss.json"), [parse_threshold("misses:+0"), parse_threshold("time_to_target:+10%:max")]
    )
    assert report.exit_code == 1
    assert verdicts(report)["misses"] is Verdict.REGRESSED
    worst = next(r for r in report.rows if r.key[1] == "teleport" and r.metric == "time_to_target")
    assert worst.new == float("inf") and worst.verdict is Verdict.NOISY  # one miss in five is not significant
    assert "| teleport | time_to_target (max) | 5/5 | 880 ms | miss | +∞ |" in render_markdown(report)


def test_an_environment_mismatch_gives_one_warning_line_each(tmp_path: Path) -> None:
    report = compare_files(fx("base.json"), fx("other_env.json"), [])
    assert report.exit_code == 0
    assert report.warnings == [
        "torch version differs: base '2.14.1', new '2.15.0'.",
        "CPU model differs: base 'AMD EPYC 9R14', new 'Intel Xeon Platinum 8488C'.",
        "threads differs: base '2', new '8'.",
        "other_env.json: the arms of case 'digits-relu' ran on different hosts (ci-runner, node-b), "
        "so its paired timings compare machines as well as arms.",
    ]
    result = compare(str(fx("base.json")), str(fx("other_env.json")))
    assert result.output.count("warning:") == 4


def test_fail_on_improvement_fails_a_pinned_baseline() -> None:
    assert compare(str(fx("slower.json")), str(fx("base.json"))).exit_code == 0
    result = compare(str(fx("slower.json")), str(fx("base.json")), "--fail-on-improvement")
    assert result.exit_code == 1, result.output
    report = compare_files(fx("slower.json"), fx("base.json"), [], fail_on_improvement=True)
    assert verdicts(report)["time_to_target"] is Verdict.IMPROVED and report.failures


def test_explicit_rules_replace_the_defaults_and_alpha_is_used() -> None:
    rules = [parse_threshold("teleport_overhead:+0.05"), parse_threshold("final_val_loss:+2%:mean")]
    report = compare_files(fx("base.json"), fx("slower.json"), rules)
    assert [(r.key[1], r.metric, r.stat) for r in report.rows] == [
        ("baseline", "final_val_loss", "mean"), ("teleport", "teleport_overhead", "median"),
        ("teleport", "final_val_loss", "mean"),
    ]
    assert report.exit_code == 0
    loose = compare_files(fx("base.json"), fx("noisy.json"), [parse_threshold("time_to_target:+10%")], alpha=0.9)
    assert verdicts(loose)["time_to_target"] is Verdict.REGRESSED


def test_a_trimmed_baseline_is_read_from_its_summary_values() -> None:
    report = compare_files(fx("base.json"), fx("summary_only.json"), [])
    assert report.exit_code == 0 and report.only_in_base == report.only_in_new == []
    assert verdicts(report)["time_to_target"] is Verdict.UNCHANGED
    # the summary keeps speed-ups as medians only, so they cannot be compared seed by seed
    assert report.warnings == ["digits-relu / teleport / sgd / cpu: speedup_time is only in the base file, so it was not compared."]


def test_rows_in_one_file_only_are_listed(tmp_path: Path) -> None:
    data = json.loads(fx("base.json").read_text())
    for record in data["trials"] + data["summary"]:
        if record["arm"] == "teleport":
            record["arm"] = "teleport-keep"
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(data))
    report = compare_files(fx("base.json"), renamed, [])
    assert report.only_in_base == [("digits-relu", "teleport", "sgd", "cpu")]
    assert report.only_in_new == [("digits-relu", "teleport-keep", "sgd", "cpu")]
    assert "Only in base: `digits-relu / teleport / sgd / cpu`" in render_markdown(report)


def test_failed_trials_are_misses_and_skipped_trials_are_left_out(tmp_path: Path) -> None:
    data = json.loads(fx("base.json").read_text())
    teleport = [t for t in data["trials"] if t["arm"] == "teleport"]
    teleport[0].update(status="skipped", message="no CUDA")
    teleport[1].update(status="error", message="worker died", final_val_loss=None, time_to_target_s=None)
    for trial in teleport[2:]:
        trial.update(status="diverged", final_val_loss=None, time_to_target_s=None, steps_to_target=None)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    report = compare_files(fx("base.json"), broken, [parse_threshold("final_val_loss:+5%"), parse_threshold("misses:+0")])
    assert "broken.json: 1 skipped trial(s) were left out." in report.warnings
    rows = {r.metric: r for r in report.rows if r.key[1] == "teleport"}
    assert rows["misses"].new == 4 and rows["misses"].verdict is Verdict.REGRESSED  # error + 3 diverged
    # a diverged trial's loss is +inf; the crashed one has no loss at all
    assert rows["final_val_loss"].new == float("inf") and rows["final_val_loss"].n_new == 3
    assert rows["final_val_loss"].verdict is Verdict.REGRESSED


# ---- pytest-benchmark -----------------------------------------------------------------------------


def test_pytest_benchmark_pair_passes_and_fails() -> None:
    same = compare(str(fx("pytest_benchmark_base.json")), str(fx("pytest_benchmark_base.json")))
    assert same.exit_code == 0, same.output
    slower = compare(str(fx("pytest_benchmark_base.json")), str(fx("pytest_benchmark_slower.json")))
    assert slower.exit_code == 1, slower.output
    report = compare_files(fx("pytest_benchmark_base.json"), fx("pytest_benchmark_slower.json"), [])
    by_name = {row.key[0].split("::")[-1]: row for row in report.rows}
    assert by_name["test_teleport[rescale-200]"].verdict is Verdict.REGRESSED
    assert by_name["test_teleport[rescale-200]"].p_value < 1e-3  # tested on the saved per-round data
    assert by_name["test_teleport[gl-data-200]"].verdict is Verdict.UNCHANGED
    assert by_name["test_grad_eval[784-16-10-10]"].note.startswith("no per-round data")


def test_pytest_benchmark_rules_name_stats_fields() -> None:
    result = compare(
        str(fx("pytest_benchmark_base.json")), str(fx("pytest_benchmark_slower.json")),
        "--fail-on", "ops:-40%", "--fail-on", "min:+50%",
    )
    assert result.exit_code == 0, result.output
    report = compare_files(fx("pytest_benchmark_base.json"), fx("pytest_benchmark_slower.json"), [parse_threshold("ops:-15%")])
    assert [r.verdict for r in report.rows] == [Verdict.REGRESSED, Verdict.UNCHANGED, Verdict.REGRESSED]


# ---- output files ---------------------------------------------------------------------------------


def test_markdown_is_rendered_as_expected(tmp_path: Path) -> None:
    for base, new, expected in (
        ("base.json", "slower.json", "slower.md"),
        ("pytest_benchmark_base.json", "pytest_benchmark_slower.json", "pytest_benchmark_slower.md"),
    ):
        out = tmp_path / expected
        compare(str(fx(base)), str(fx(new)), "--markdown", str(out))
        assert out.read_text() == (FIXTURES / "expected" / expected).read_text()
    text = (FIXTURES / "expected" / "slower.md").read_text()
    assert text.startswith("### telebench compare: ❌ failed: 2 regressed\n")
    assert "| teleport | time_to_target | 5/5 | 840 ms | 1.01 s | +20.0% | +10% | 0.0079 | 🔴 regressed |  |" in text
    assert "<sub>Δ is measured" in text


def test_json_output_and_the_github_step_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    out = tmp_path / "nested" / "compare.json"
    result = compare(
        str(fx("base.json")), str(fx("miss.json")), "--json", str(out), "--fail-on", "time_to_target:+10%:max",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 0, result.output  # one miss in five: noisy, not a regression
    data = json.loads(out.read_text())
    assert data["exit_code"] == 0 and data["counts"]["noisy"] == 1 and data["kind"] == "telebench"
    row = next(r for r in data["rows"] if r["arm"] == "teleport")
    assert row["new"] == "inf" and row["base"] == pytest.approx(0.88) and row["verdict"] == "noisy"
    assert data["thresholds"] == ["time_to_target:+10%:max"]
    text = summary.read_text()
    assert text.startswith("earlier step\n### telebench compare: ✅ passed: 1 noisy")


def test_render_table_is_a_rich_table() -> None:
    from rich.console import Console

    report = compare_files(fx("base.json"), fx("slower.json"), [])
    console = Console(width=200, record=True)
    console.print(render_table(report))
    text = console.export_text()
    assert "time_to_target" in text and "+20.0%" in text and "regressed" in text
    assert "All rows: case digits-relu, optimizer sgd, device cpu." in text


# ---- bad input: one sentence, exit 2, no traceback ------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """A real process, so that exit codes are those of `cli.main()`; never writes a CI step summary."""
    return subprocess.run(
        [sys.executable, "-m", "telebench", "compare", *args], capture_output=True, text=True, timeout=60,
        cwd=FIXTURES, env={**os.environ, "GITHUB_STEP_SUMMARY": "", "PYTHONPATH": str(FIXTURES.parents[2])},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.json", "base.json"], "missing.json: file not found"),
        (["neither.json", "base.json"], "neither.json: neither a telebench results file"),
        (["base.json", "unknown_schema.json"], "unknown results schema 'telebench.results/9'"),
        (["base.json", "pytest_benchmark_base.json"], "is a telebench results file but"),
        (["base.json", "base.json", "--fail-on", "time_to_target:10%"], "write METRIC:THRESHOLD[:STAT]"),
        (["base.json", "base.json", "--fail-on", "walltime:+10%"], "unknown metric 'walltime'"),
        (["make_fixtures.py", "base.json"], "not valid JSON"),
        # nothing compared is not a pass: a wrong baseline must fail CI
        (["base.json", "empty.json"], "empty.json: holds no trials or summary rows"),
        (["empty.json", "base.json"], "empty.json: holds no trials or summary rows"),
        (["base.json", "other_suite.json"], "share no row (case / arm / optimizer / device), so nothing could be compared"),
        (["pytest_benchmark_base.json", "pytest_benchmark_empty.json"], "holds no benchmarks"),
        (["base.json", "nan_summary.json"], "nan_summary.json: digits-relu / teleport / sgd / cpu: time_to_target holds NaN"),
        (["pytest_benchmark_base.json", "pytest_benchmark_nan.json"], "median holds NaN"),
        (["summary_only.json", "summary_only.json", "--fail-on", "time_to_target:+10%", "--fail-on", "final_train_loss:+5%"],
         "--fail-on final_train_loss:+5%: no row of summary_only.json and summary_only.json has final_train_loss on "
         "both sides, so this rule checked nothing"),
        (["summary_only.json", "summary_only.json", "--fail-on", "final_train_loss:+5%"], "so nothing was compared"),
        (["/dev/zero", "base.json"], "/dev/zero: is not a regular file"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(args: list[str], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert lines[0].endswith(".") and lines[0].replace("e.g. ", "").count(". ") == 0  # one sentence


def test_real_process_exit_codes_for_pass_and_regression() -> None:
    ok, bad = run_cli("base.json", "base.json"), run_cli("base.json", "slower.json")
    assert (ok.returncode, bad.returncode) == (0, 1), ok.stderr + bad.stderr


def test_the_api_raises_user_errors() -> None:
    with pytest.raises(UserError, match="outside"):
        compare_files(fx("base.json"), fx("base.json"), [], alpha=0)
    with pytest.raises(UserError, match="compare two files of the same kind"):
        compare_files(fx("pytest_benchmark_base.json"), fx("base.json"), [])


def test_nothing_compared_is_exit_2_through_the_api_and_the_report() -> None:
    with pytest.raises(UserError, match="share no row"):
        compare_files(fx("base.json"), fx("other_suite.json"), [])
    with pytest.raises(UserError, match="holds NaN"):
        compare_files(fx("base.json"), fx("nan_summary.json"), [])
    report = compare_files(fx("base.json"), fx("base.json"), [])
    report.rows.clear()  # a report built by hand with no rows says so and exits 2 too
    assert report.exit_code == 2 and render_markdown(report).startswith("### telebench compare: ❌ nothing compared")
