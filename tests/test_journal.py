"""The one journal every experiment kind resumes from: torn tails, garbage lines, the folder lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from telebench.errors import UserError
from telebench.execution.journal import Journal, lock


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
