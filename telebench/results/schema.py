"""The one results file format of every experiment kind, and a checked reader that migrates old files.

Schema 2 has one header for every kind — schema, kind, suite, suite_path, description, started,
created (when it was written), wall_seconds, partial, environment — and then the kind's own
payload: `trials` and `summary` for `train`, `cases` for `meta` and `correlation`. Files written
before schema 2 (telebench.results/1, telebench.meta/1, telebench.correlation/1) are migrated on
read, so every committed report still re-renders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from telebench.config.yaml_io import env_limit, read_regular_file
from telebench.errors import UserError

SCHEMA = "telebench.results/2"
KINDS = ("train", "meta", "correlation")
PAYLOAD = {"train": "trials", "meta": "cases", "correlation": "cases"}  # the list every file of a kind holds
MAX_RESULTS_BYTES = 256 << 20  # a results.json of 300 trials with their histories is about 6 MiB
_OLD_KIND = {"telebench.results/1": "train", "telebench.meta/1": "meta", "telebench.correlation/1": "correlation"}


def read_results_bytes(path: Path, what: str = "the results.json that `telebench run` wrote") -> bytes:
    """A results or benchmark JSON file's bytes, refusing devices, FIFOs and files over the size limit
    (TELEBENCH_MAX_RESULTS_BYTES, default 256 MiB) before reading them."""
    limit = env_limit("TELEBENCH_MAX_RESULTS_BYTES", MAX_RESULTS_BYTES)
    return read_regular_file(path, limit, what=what,
                             too_big="pass the results.json of a run, or raise the limit with TELEBENCH_MAX_RESULTS_BYTES")


def header(kind: str, name: str, source: str, description: str) -> dict[str, Any]:
    """The fields every results file starts with; the runner fills in times, partial and environment."""
    return {"schema": SCHEMA, "kind": kind, "suite": name, "suite_path": source, "description": description}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 results dict of any kind as schema 2 (unchanged if it already is)."""
    old = data.get("schema")
    if old == SCHEMA or old not in _OLD_KIND:
        return data
    kind = _OLD_KIND[old]
    renamed = {"study": "suite", "source": "suite_path"} if kind == "correlation" else {}
    body = {renamed.get(k, k): v for k, v in data.items() if k != "schema"}
    if kind == "meta":  # meta wrote `finished` where the others write `created`
        body["created"] = body.pop("finished", None)
    return {"schema": SCHEMA, "kind": kind, **body}


def load_results(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read, check and migrate a results.json; `kind` insists on one kind. Problems are one sentence."""
    p = Path(path)
    if p.is_dir() and (p / "results.json").is_file():  # an --out folder: its results
        p = p / "results.json"
    if not p.exists():
        raise UserError(f"Results file {p} does not exist; pass the results.json that `telebench run` wrote in its --out folder.")
    if p.is_dir():
        raise UserError(f"Results file {p} is a folder without a results.json; pass the results.json that "
                        "`telebench run` wrote in its --out folder.")
    blob = read_results_bytes(p)
    try:
        data = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"Cannot read results file {p} ({exc}); check its encoding.") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"Results file {p} is not valid JSON (line {exc.lineno}: {exc.msg}); pass the results.json that `telebench run` wrote."
        ) from None
    if not isinstance(data, dict) or "schema" not in data:
        raise UserError(f"{p} is not a telebench results file (no `schema` key); pass a results.json from `telebench run`.")
    data = migrate(data)
    if data["schema"] != SCHEMA or data.get("kind") not in KINDS:
        raise UserError(
            f"{p} has schema {data['schema']!r}, but this telebench reads {SCHEMA!r} and its predecessors; "
            "re-run the suite or use the telebench version that wrote it."
        )
    if kind is not None and data["kind"] != kind:
        raise UserError(f"{p} holds a {data['kind']} experiment, not a {kind} one; pass the results of a {kind} run.")
    if not isinstance(data.get(PAYLOAD[data["kind"]]), list):
        raise UserError(f"{p} has no `{PAYLOAD[data['kind']]}` list; the file is damaged, re-run the suite to regenerate it.")
    return data
