"""The append-only journal of finished work in an output folder, used by every experiment kind.

One JSON record a line, appended, flushed and fsynced per finished unit, so Ctrl-C or a crash keeps
every finished unit and a rerun skips it by id. Reading never trusts the file: a tail torn by a
crash mid-append is cut off before the next append (so the next record does not glue onto it), and
a line that is not a JSON object with an id is skipped with a warning naming file:line. A journal
whose older lines were written without ids can name a `key` that derives the id from a record's
fields. A folder is written by one run at a time: `lock()` takes an exclusive lock, and a second
run refuses.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from telebench.errors import UserError
from telebench.results.store import dumps, write_all

FINISHED_STATUSES = ("ok", "diverged", "skipped")  # "error" units are retried on a rerun
LOCK_NAME = ".telebench.lock"


class Journal:
    """The journal `name` (results.jsonl by default) of one output folder."""

    def __init__(
        self, out_dir: Path, name: str = "results.jsonl", key: Callable[[dict[str, Any]], str] | None = None
    ) -> None:
        self.path = Path(out_dir) / name
        self.key = key  # supplies the id of a record written without one; None: such a line is skipped
        self.warnings: list[str] = []  # unreadable lines seen by the last read, as "file:line: why"

    def records(self) -> list[dict[str, Any]]:
        """Every readable record in file order; unreadable lines are skipped and listed in `warnings`."""
        self.warnings = []
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise UserError(f"{self.path}: is not a regular file; move it away so the journal can be written.")
        data = self.path.read_bytes()
        out: list[dict[str, Any]] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            record = _parse(raw, self.key)
            if isinstance(record, str):
                torn = number == data.count(b"\n") + 1  # the last line has no newline: a torn append
                why = "a last line torn by an interrupted write" if torn else record
                self.warnings.append(f"{self.path}:{number}: {why}; skipped")
                continue
            out.append(record)
        return out

    def finished(self) -> dict[str, dict[str, Any]]:
        """Units already done, by id (the last record of an id wins; an error record undoes an earlier one)."""
        done: dict[str, dict[str, Any]] = {}
        for record in self.records():
            if record.get("status") in FINISHED_STATUSES:
                done[record["id"]] = record
            else:
                done.pop(record["id"], None)
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably; a torn tail left by a crash is cut off first. A write that fails (a full
        disk) is undone, so the journal never holds half a line, and is a UserError that says how to resume."""
        line = (dumps(record) + "\n").encode("utf-8")
        try:
            self._repair_tail()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise self._write_error(exc) from None
        try:
            start = os.fstat(fd).st_size
            try:
                write_all(fd, line)
                os.fsync(fd)
            except OSError as exc:
                _truncate(fd, start)
                raise self._write_error(exc) from None
        finally:
            os.close(fd)

    def _write_error(self, exc: OSError) -> UserError:
        return UserError(
            f"{self.path}: cannot record a finished unit ({exc.strerror or exc}); every unit recorded "
            f"before it is kept there, so free some space and rerun with --out {self.path.parent} to resume."
        )

    def _repair_tail(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            if isinstance(_parse(data[keep:], self.key), dict):  # whole, only its newline was lost: keep the record
                fh.write(b"\n")
            else:  # torn mid-record, so unreadable (records() skipped it): cut it off
                fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())


def _truncate(fd: int, size: int) -> None:
    """Cut a failed append back off; if even that fails, the next read skips the torn line and the next
    append cuts it (see `_repair_tail`)."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass


def _parse(raw: bytes, key: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any] | str:
    """A record, or why the line is not one; `key` supplies the id of a record that has none."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})"
    if not isinstance(record, dict):
        kind = {type(None): "null", bool: "boolean", str: "string", list: "array"}.get(type(record), "number")
        return f"a JSON {kind}, not a record"
    if "id" not in record and key is not None:
        try:
            record["id"] = key(record)
        except (KeyError, TypeError, ValueError):  # the fields the key reads are missing or malformed
            pass
    if not isinstance(record.get("id"), str):
        return "a record without an `id`"
    return record


@contextmanager
def lock(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir` for this run; a second run into the same folder gets one sentence and no lock."""
    path = Path(out_dir) / LOCK_NAME
    try:
        fh = path.open("a+")
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot take the folder's lock {path} ({exc.strerror or exc}); move it "
                        "away if it is a folder, or choose another folder with --out.") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"--out {out_dir}: another telebench run is writing this folder; wait for it to finish, "
                "or choose another folder with --out."
            ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
        except OSError:
            pass  # the pid is only a hint for people; the lock itself is held
        yield
    finally:
        fh.close()  # closing releases the lock
