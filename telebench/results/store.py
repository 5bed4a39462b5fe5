"""Writing results: the output folder, JSON that every reader accepts, and atomic replacement.

A final file is replaced atomically, so a reader never sees half a file and a failed run never
destroys an earlier one. (The per-unit journal is telebench.execution.journal.)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from telebench.errors import UserError


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class WriteError(UserError):
    """A results file could not be written (a full disk, say); nothing half-written was left behind."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path = path
        self.reason = exc.strerror or str(exc)
        super().__init__(f"{path}: cannot be written ({self.reason}); any earlier {path.name} is unchanged, so "
                         "free some space (or fix the folder's permissions) and try again.")


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may be short); OSError (ENOSPC, EIO, ...) propagates."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see a partial file; any OSError
    (a full disk) is a WriteError, with the temp file removed and an earlier file left as it was."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write_text` for bytes."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, so the file cannot be written there; move the folder away and rerun.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise WriteError(path, exc) from None
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteError(path, exc) from None
        raise


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0) > 0:  # tensors and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON with NaN/inf written as null, so every standard JSON reader accepts the file."""
    return json.dumps(_json_safe(obj), indent=indent, default=_json_default)


def finite(x: Any) -> float | None:
    """A finite float, or None for null, NaN, ±inf and non-numbers (booleans, the "inf" strings, ...)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, in nested dicts, lists and tuples too."""
    if isinstance(obj, float):
        return finite(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def default_out_dir(suite_name: str) -> Path:
    return Path("reports") / f"{suite_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


OUTPUT_FILES = ("results.json", "report.md", "profile.json", "profile.md")  # what the commands write into --out


def prepare_out_dir(out: Path) -> None:
    """Fail before training starts, not after, when results could not be written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; choose a folder with --out.")
    for name in OUTPUT_FILES:
        if (out / name).is_dir():
            raise UserError(f"--out {out}: {name} there is a folder, so results cannot be written; move it away, "
                            "or choose another folder with --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".telebench-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"--out {out}: the output folder cannot be written ({exc.strerror or exc}); choose a writable folder with --out."
        ) from None
