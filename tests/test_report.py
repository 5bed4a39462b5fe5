"""report.md, plots, the terminal table and `telebench report` on synthetic results."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from rich.console import Console
from synthetic_results import make_results, make_trials
from typer.testing import CliRunner

from telebench.cli import app
from telebench.errors import UserError
from telebench.render import fmt
from telebench.render.load import load_results
from telebench.render.markdown import write_report
from telebench.render.terminal import render_terminal

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results() -> dict:
    return make_results()


@pytest.fixture(scope="module")
def report_text(results: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report")
    path = write_report(results, out)
    return path, path.read_text(encoding="utf-8")


def _row(results: dict, case: str, optimizer: str, arm: str) -> dict:
    return next(
        r for r in results["summary"] if (r["case"], r["optimizer"], r["arm"]) == (case, optimizer, arm)
    )


def test_report_has_every_section(report_text: tuple[Path, str]) -> None:
    path, text = report_text
    assert path.name == "report.md"
    assert text.startswith("# telebench report: synthetic-suite (2026-11-22)\n")
    assert "2026-11-22" in text
    for heading in (
        "## Environment",
        "## Target",
        "## Summary",
        "## Final losses",
        "## Case: digits-mlp",
        "## Case: synthetic",
        "### adam on cpu",
        "## Teleport invariance",
        "## Trial status",
    ):
        assert f"\n{heading}\n" in text
    assert "| torch | 2.14.1 |" in text
    assert "train_loss ≤" in text and "val_accuracy ≥ 0.8" in text and "relaxed by 5%" in text
    # the test is now the sign test (was "Wilcoxon"), named in the legend and in the methods section
    assert "speedup* = baseline cost / arm cost" in text and "exact two-sided sign test" in text and "never dropped" in text
    assert "**Primary metric: time to target (training clock).**" in text and "Holm" in text
    assert "order-statistic interval for the median" in text and "**peeked**" in text
    assert "Partial results" not in text and "Shared device" not in text


def test_report_numbers_match_the_summary(results: dict, report_text: tuple[Path, str]) -> None:
    _, text = report_text
    tele = _row(results, "digits-mlp", "adam", "teleport")
    speed = tele["speedup_time"]
    cell = f"{fmt.ratio(speed['median'])} [{fmt.ci(speed['ci_low'], speed['ci_high'])}]"
    assert (
        f"| digits-mlp | adam | cpu | teleport | 8 | 0 | {fmt.seconds(tele['time_to_target_s']['median'])} |"
        in text
    )
    assert cell in text
    assert re.search(  # the interval's real level, 99.21% with 8 seeds (was "95% CI")
        r"With adam, teleport reached the target [\d.]+× faster in training-clock time \(99.21% CI", text
    )
    assert f"| {fmt.p_value(tele['p_value'])} → {fmt.p_value(tele['p_adjusted'])} |" in text
    assert f"teleports cost {fmt.percent(tele['teleport_overhead']['median'])} of training time" in text
    assert "| digits-mlp | adam | cpu | teleport | 16 | 0 | 1.0e-07 | 2.0e-07 |" in text  # invariance table, 8 seeds
    assert "| synthetic / sgd / cpu / teleport | 1 | 1 | 1 | 0 |" in text  # status counts
    assert "**error** — RuntimeError: boom" in text and "**diverged** — loss became nan" in text
    assert "1/3 seeds reached the target, baseline 3/3" in text  # misses stay visible


def test_plots_exist_are_valid_pngs_and_are_linked(report_text: tuple[Path, str]) -> None:
    path, text = report_text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert sorted(links) == [
        "plots/digits-mlp-adam-cpu.png",
        "plots/digits-mlp-sgd-cpu.png",
        "plots/synthetic-sgd-cpu.png",
    ]
    for link in links:
        png = path.parent / link
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = matplotlib.image.imread(png).shape
        assert width > 800 and height > 300


def test_partial_shared_device_and_mixed_hosts_are_noted(tmp_path: Path) -> None:
    trials = make_trials(seeds=3)
    trials[0]["timing"]["shared_device"] = True
    trials[1]["host"] = "other-node"
    text = write_report(make_results(trials, partial=True), tmp_path).read_text(encoding="utf-8")
    assert "**Partial results.**" in text
    assert "**Shared device.** 1 trial(s)" in text
    assert "**Different machines.**" in text and "other-node" in text


def test_two_seeds_are_too_few_for_a_verdict(tmp_path: Path) -> None:
    text = write_report(make_results(make_trials(seeds=2)), tmp_path).read_text(encoding="utf-8")
    assert "With adam, teleport had too few informative seeds for a verdict" in text
    assert "only 2 informative seed pairs where a verdict needs 6" in text  # was "needs 3"


def test_unwritable_out_dir_is_a_user_error(results: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="Cannot write the report to"):
        write_report(results, blocker / "report")


def test_terminal_table(results: dict) -> None:
    console = Console(record=True, width=140)
    render_terminal(results, console)
    text = console.export_text()
    assert "case digits-mlp" in text and "case synthetic" in text
    tele = _row(results, "digits-mlp", "adam", "teleport")
    assert fmt.ratio(tele["speedup_time"]["median"]) in text
    for word in ("baseline", "reset-only", "faster", "no clear", "sign test", "identical", "Holm"):  # was "Wilcoxon"
        assert word in text
    assert "reset-only with an optimizer that has no state" in text


def test_load_results_fills_a_missing_summary(results: dict, tmp_path: Path) -> None:
    raw = {**results, "trials": make_trials(seeds=3)}
    del raw["summary"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    loaded = load_results(path)
    assert loaded["trials"][0]["target"]["value"] is not None
    assert len(loaded["summary"]) == 9


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telebench", "report", *args], capture_output=True, text=True, timeout=120
    )


def test_report_command_end_to_end(results: dict, tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results), encoding="utf-8")
    done = _cli(str(path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.md").is_file() and (tmp_path / "plots" / "digits-mlp-adam-cpu.png").is_file()
    assert "case digits-mlp" in done.stdout
    other = tmp_path / "elsewhere"
    assert _cli(str(path), "--out", str(other)).returncode == 0
    assert (other / "report.md").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ('{"schema": "telebench.results/0", "trials": []}', "has schema 'telebench.results/0'"),
        ('{"trials": []}', "not a telebench results file"),
        ('{"schema": "telebench.results/1"}', "has no `trials` list"),
    ],
)
def test_report_command_bad_files_are_user_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(path)])
    assert isinstance(result.exception, UserError) and message in str(result.exception)
    assert not (tmp_path / "report.md").exists()


def test_report_command_bad_file_exits_2_without_traceback(tmp_path: Path) -> None:
    done = _cli(str(tmp_path / "missing.json"))
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_final_losses_table_pairs_validation_loss_with_the_baseline(results: dict, report_text: tuple[Path, str]) -> None:
    _, text = report_text
    section = text.split("\n## Final losses\n", 1)[1].split("\n## ", 1)[0]
    assert "Δ val loss vs baseline [CI]" in section and "Δ train loss %" in section  # was "[95% CI]"
    compared = [r["val_loss_change"] for r in results["summary"] if r.get("val_loss_change")]
    assert compared and all(c["n_pairs"] >= 1 for c in compared)
    words = {"lower", "higher", "no clear difference", "too few seeds", "identical"}  # two new words
    assert all(c["verdict"] in words for c in compared)
    for r in results["summary"]:
        assert f"| {r['case']} | {r['optimizer']} | {r['device']} | {r['arm']} |" in section


def test_identical_arm_is_explained_and_censored_medians_are_bounds(report_text: tuple[Path, str]) -> None:
    _, text = report_text
    assert "With sgd, reset-only was identical to the baseline" in text
    assert "reset-only with an optimizer that has no state (sgd without momentum)" in text
    assert "| synthetic | sgd | cpu | teleport | 3 | 2 | ≥ " in text  # the median time is only a bound
    assert "∞×" not in text and "| inf" not in text


def test_report_recomputes_old_summaries_with_the_analysis_settings(results: dict, tmp_path: Path) -> None:
    stale = {**results, "summary": [{**r, "verdict": "faster"} for r in results["summary"]],
             "analysis": {"primary_metric": "final_train_loss", "alpha": 0.05}}
    text = write_report(stale, tmp_path).read_text(encoding="utf-8")
    assert "**Primary metric: final training loss.**" in text
    assert "| synthetic | sgd | cpu | teleport | 3 | 2 |" in text and "too few seeds" in text


# ---- the terminal table at any width: labels never break mid-word ------------------------------------
def _table_part(console: Console) -> str:
    """What render_terminal printed before its footer (the footer is prose and wraps between words)."""
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return re.split(r"\d+ columns: left out|verdicts on the primary metric", text, maxsplit=1)[0]


def _label_words(results: dict) -> set[str]:
    words = {"optimizer", "arm", "verdict"}
    for row in results["summary"]:
        for cell in (row["optimizer"], row["arm"], row.get("verdict") or "baseline"):
            words.update(cell.split())
    return words - {"—"}


@pytest.mark.parametrize("width", [60, 80, 100])
def test_terminal_labels_never_break_mid_word_at_any_width(results: dict, width: int) -> None:
    console = Console(file=io.StringIO(), width=width)
    render_terminal(results, console)
    text = _table_part(console)
    tokens = text.split()
    for word in _label_words(results):
        assert word in tokens, (word, text)
        fragments = [t for t in tokens if t != word and len(t) >= 3 and (word.startswith(t) or word.endswith(t))
                     and t not in _label_words(results)]
        assert not fragments, (word, fragments, text)
    assert all(len(line) <= width for line in console.file.getvalue().splitlines())  # type: ignore[attr-defined]


def test_narrow_terminal_leaves_columns_out_whole_and_says_so(results: dict) -> None:
    console = Console(file=io.StringIO(), width=80)
    render_terminal(results, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    tele = _row(results, "digits-mlp", "adam", "teleport")
    speed = tele["speedup_time"]
    assert fmt.ci(speed["ci_low"], speed["ci_high"]) in text.split()  # numbers whole, not folded
    assert "80 columns: left out seeds 10%" in " ".join(text.split())


def test_piped_console_shows_every_column_unbroken(results: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from telebench.render.console import make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console(file=io.StringIO())
    render_terminal(results, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "left out" not in text
    tokens = _table_part(console).split()
    for word in (*_label_words(results), "target", "speedup", "→Holm", "Δloss"):
        assert word in tokens, word
