"""Results files: environment metadata, the per-trial JSONL log and the atomic final JSON.

The JSONL log is appended and flushed per finished trial, so Ctrl-C or a crash keeps every finished
trial and a rerun can skip them by spec hash. The final file is replaced atomically so a reader
never sees half a file and a failed run never destroys an earlier one.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import telebench
from telebench.errors import UserError

SCHEMA = "telebench.results/1"
FINISHED_STATUSES = ("ok", "diverged", "skipped")  # "error" trials are retried on a rerun


def cpu_model() -> str:
    """The CPU's marketing name; platform.processor() is often empty on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(devices: list[str] | None = None) -> dict[str, Any]:
    """Everything needed to tell whether two result files are comparable."""
    import torch  # imported here so that readers of results files (compare, report) stay light

    cuda = torch.cuda.is_available()
    names: dict[str, str] = {"cpu": cpu_model()}
    if cuda:
        for i in range(torch.cuda.device_count()):
            names[f"cuda:{i}"] = torch.cuda.get_device_name(i)
    return {
        "telebench": telebench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "devices": sorted(set(devices or ["cpu"])),
        "device_names": names,
        "cpu_model": names["cpu"],
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    return json.dumps(_finite(obj), indent=indent, default=_json_default)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class TrialLog:
    """The append-only `results.jsonl` of one output folder."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "results.jsonl"

    def finished(self) -> dict[str, dict[str, Any]]:
        """Trials already done, by id (the last record of an id wins; errors are not 'done')."""
        done: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return done
        with self.path.open() as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write; the trial simply reruns
                if rec.get("status") in FINISHED_STATUSES:
                    done[rec["id"]] = rec
                else:
                    done.pop(rec.get("id"), None)
        return done

    def append(self, trial: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(dumps(trial) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results.json written by telebench; every problem is one sentence for the user."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"Results file {p} does not exist; pass the results.json that `telebench run` wrote in its --out folder.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"Cannot read results file {p} ({exc}); check its permissions and encoding.") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"Results file {p} is not valid JSON (line {exc.lineno}: {exc.msg}); pass the results.json that `telebench run` wrote."
        ) from None
    if not isinstance(data, dict) or "schema" not in data:
        raise UserError(f"{p} is not a telebench results file (no `schema` key); pass a results.json from `telebench run`.")
    if data["schema"] != SCHEMA:
        raise UserError(
            f"{p} has schema {data['schema']!r}, but this telebench reads only {SCHEMA!r}; "
            "re-run the suite or use the telebench version that wrote it."
        )
    if not isinstance(data.get("trials"), list):
        raise UserError(f"{p} has no `trials` list; the file is damaged, re-run the suite to regenerate it.")
    return data
