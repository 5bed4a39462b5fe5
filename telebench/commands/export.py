"""`telebench export`: a results.json as a CSV or parquet table (the rows: telebench.results.export)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from telebench.errors import UserError
from telebench.render.console import make_console
from telebench.results.schema import load_results
from telebench.results.store import atomic_write_bytes

FORMATS = ("csv", "parquet")
PANDAS_MISSING = "telebench export needs pandas, which is not installed: pip install 'pandas>=2'."
PYARROW_MISSING = "--format parquet needs pyarrow, which is not installed: pip install 'telebench[parquet]'."


def default_out(results_path: Path, fmt: str, history: bool) -> Path:
    """results.json -> results.csv (results-history.csv with --history), beside it."""
    return results_path.with_name(f"{results_path.stem}{'-history' if history else ''}.{fmt}")


def _encode(frame: Any, fmt: str) -> bytes:
    if fmt == "csv":
        return str(frame.to_csv(index=False)).encode("utf-8")
    try:
        import pyarrow  # noqa: F401  (pandas writes parquet through it)
    except ImportError:
        raise UserError(PYARROW_MISSING) from None
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def run_export(results_path: Path, fmt: str, out: Path | None, history: bool, console: Console | None = None) -> Path:
    """Read RESULTS, build its table and write it atomically as `fmt`; returns the file written."""
    console = console or make_console()
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}, e.g. --format csv.")
    data = load_results(results_path)
    try:
        from telebench.results.export import to_frame

        frame = to_frame(data, history)
    except ImportError:
        raise UserError(PANDAS_MISSING) from None
    target = out if out is not None else default_out(results_path, fmt, history)
    atomic_write_bytes(target, _encode(frame, fmt))
    what = "evaluation point" if history else {"train": "trial", "meta": "test run", "correlation": "network"}.get(
        data["kind"], "row")
    console.print(f"{len(frame)} {what} row(s), {len(frame.columns)} columns: {target}", highlight=False)
    return target
