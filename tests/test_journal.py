"""The one journal every experiment kind resumes from: torn tails, garbage lines, the folder lock."""

from __future__ import annotations

import errno
import io
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from telebench.commands.suites import run_suite
from telebench.config.overrides import overrides_from_options
from telebench.errors import UserError
from telebench.execution.journal import Journal, lock
from telebench.experiments.base import RunOutcome, RunRequest
from telebench.results.store import WriteError, atomic_write_text


def test_a_torn_last_line_is_cut_before_the_next_append_so_no_record_is_glued_to_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append({"id": "a", "status": "ok"})
    with journal.path.open("ab") as fh:
        fh.write(b'{"id": "b", "status": "o')  # a crash mid-append
    assert set(journal.finished()) == {"a"}
    assert journal.warnings == [f"{journal.path}:2: a last line torn by an interrupted write; skipped"]
    journal.append({"id": "c", "status": "ok"})
    assert set(journal.finished()) == {"a", "c"} and journal.warnings == []
    assert journal.path.read_text().count("\n") == 2


def test_a_whole_record_that_only_lost_its_newline_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.path.write_text('{"id": "a", "status": "ok"}')
    journal.append({"id": "b", "status": "ok"})
    assert set(journal.finished()) == {"a", "b"}


@pytest.mark.parametrize(("line", "why"), [
    (b"123", "a JSON number, not a record"),
    (b"null", "a JSON null, not a record"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"case": "x", "status": "ok"}', "a record without an `id`"),
    (b"{not json", "not JSON"),
])
def test_unreadable_lines_are_skipped_with_a_warning_naming_file_and_line(tmp_path: Path, line: bytes, why: str) -> None:
    journal = Journal(tmp_path)
    journal.path.write_bytes(b'{"id": "a", "status": "ok"}\n' + line + b'\n{"id": "b", "status": "ok"}\n')
    assert set(journal.finished()) == {"a", "b"}
    (warning,) = journal.warnings
    assert warning.startswith(f"{journal.path}:2: {why}")


def test_an_error_record_undoes_an_earlier_finish_so_the_unit_reruns(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append({"id": "a", "status": "ok"})
    journal.append({"id": "a", "status": "error"})
    assert journal.finished() == {}


def test_a_journal_that_is_a_folder_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").mkdir()
    with pytest.raises(UserError, match="is not a regular file"):
        Journal(tmp_path).records()


def test_a_second_run_into_a_locked_folder_refuses_and_the_lock_is_released_after(tmp_path: Path) -> None:
    with lock(tmp_path):
        with pytest.raises(UserError, match="another telebench run is writing this folder"):
            with lock(tmp_path):
                pass
    with lock(tmp_path):  # released when the first run ended
        pass


# ---- a full disk: one sentence, nothing half-written, resumable -----------------------------------


def enospc_on(monkeypatch, matches: str, after_bytes: int = 0) -> list[int]:
    """os.write raises ENOSPC for files whose path contains `matches`, after `after_bytes` of a write got
    through (a short write, as a disk that fills mid-line gives); returns the count of refused writes."""
    real = os.write
    refused: list[int] = []

    def write(fd: int, data: Any) -> int:
        if matches in os.readlink(f"/proc/self/fd/{fd}"):
            if after_bytes and not refused:
                refused.append(0)
                return real(fd, bytes(data)[:after_bytes])
            refused.append(1)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return refused


def test_a_full_disk_mid_append_leaves_no_half_line_and_says_how_to_resume(tmp_path: Path, monkeypatch) -> None:
    journal = Journal(tmp_path)
    journal.append({"id": "a", "status": "ok"})
    before = journal.path.read_bytes()
    refused = enospc_on(monkeypatch, "results.jsonl", after_bytes=5)  # 5 bytes land, then the disk is full
    with pytest.raises(UserError) as info:
        journal.append({"id": "b", "status": "ok", "history": list(range(100))})
    assert refused == [0, 1]
    assert str(info.value) == (f"{journal.path}: cannot record a finished unit (No space left on device); every unit "
                               f"recorded before it is kept there, so free some space and rerun with --out {tmp_path} "
                               "to resume.")
    assert journal.path.read_bytes() == before
    monkeypatch.undo()
    assert set(journal.finished()) == {"a"} and journal.warnings == []


def test_a_full_disk_keeps_the_earlier_file_and_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "results.json"
    atomic_write_text(path, '{"old": true}')
    enospc_on(monkeypatch, ".results.json.", after_bytes=3)
    with pytest.raises(WriteError) as info:
        atomic_write_text(path, '{"new": true}' * 1000)
    assert str(info.value).startswith(f"{path}: cannot be written (No space left on device); any earlier results.json "
                                      "is unchanged")
    assert path.read_text() == '{"old": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    with pytest.raises(UserError, match="is a folder"):
        atomic_write_text(tmp_path, "x")


# ---- runs into one folder: what results.json keeps ----------------------------------------------

SUITE = textwrap.dedent("""\
    name: resume
    defaults:
      budget: {steps: 20}
      eval_every: 10
      target: {metric: train_loss, value: 0.5}
      arms: [baseline, teleport]
    cases:
      - name: a
        dataset: {name: digits}
        model: {widths: [64, 8, 10], activation: relu}
        optimizers: [{name: sgd, lr: 0.1}]
""")


def run(tmp_path: Path, seeds: str, suite: str = SUITE) -> tuple[RunOutcome, str]:
    path = tmp_path / f"{suite.split()[1]}.yaml"
    path.write_text(suite)
    console = Console(file=io.StringIO(), width=300)
    outcome = run_suite(str(path), overrides_from_options(seeds=seeds),
                        lambda name: RunRequest(out_dir=tmp_path / "out", report=False), console)
    return outcome, console.file.getvalue()


def ids(lines: str) -> set[str]:
    return {json.loads(line)["id"] for line in lines.splitlines() if line}


@pytest.mark.slow
def test_a_narrower_rerun_keeps_every_trial_of_the_suite_and_says_so(tmp_path: Path, one_thread) -> None:
    first, _ = run(tmp_path, "0-2")
    assert len(first.results["trials"]) == 6
    narrow, text = run(tmp_path, "1")
    assert narrow.ran == 0 and narrow.skipped == 2
    assert {t["id"] for t in narrow.results["trials"]} == {t["id"] for t in first.results["trials"]}
    assert {row["n_seeds"] for row in narrow.results["summary"]} == {1}  # the summary covers the plan
    assert "results.json also keeps 4 earlier unit(s) of suite 'resume'" in " ".join(text.split())
    assert not narrow.results["partial"]
    other, text = run(tmp_path, "0", SUITE.replace("name: resume", "name: other"))
    assert other.ran == 2 and len(other.results["trials"]) == 2
    assert "also holds units of other suites (resume)" in " ".join(text.split())


@pytest.mark.slow
def test_a_full_disk_at_results_json_keeps_the_journal_and_resumes(tmp_path: Path, monkeypatch, one_thread) -> None:
    run(tmp_path, "0")
    out = tmp_path / "out"
    before = (out / "results.json").read_bytes()
    enospc_on(monkeypatch, ".results.json.")
    with pytest.raises(UserError) as info:
        run(tmp_path, "0-1")
    assert str(info.value) == (f"{out / 'results.json'}: cannot be written (No space left on device); every finished "
                               f"unit is kept in {out / 'results.jsonl'} and any earlier results.json is unchanged, "
                               f"so free some space and rerun with --out {out} to resume.")
    assert (out / "results.json").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".results.json.")]
    monkeypatch.undo()
    again, _ = run(tmp_path, "0-1")
    assert (again.ran, again.skipped) == (0, 4) and len(again.results["trials"]) == 4


@pytest.mark.slow
def test_an_interrupt_right_after_a_journal_line_still_puts_that_unit_in_results_json(
        tmp_path: Path, monkeypatch, one_thread) -> None:
    real = Journal.append
    appended: list[str] = []

    def append_then_interrupt(self: Journal, record: dict[str, Any]) -> None:
        real(self, record)
        appended.append(record["id"])
        if len(appended) == 3:  # Ctrl-C lands after the journal line, before the runner's own bookkeeping
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "append", append_then_interrupt)
    outcome, text = run(tmp_path, "0-2")
    journal = (tmp_path / "out" / "results.jsonl").read_text()
    assert outcome.interrupted and len(appended) == 3 == len(journal.splitlines())
    assert {t["id"] for t in outcome.results["trials"]} == ids(journal)
    assert "Interrupted: 3 finished unit(s) kept" in text
