"""Open an input file and decide which of the two formats it is, with one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

from telebench.analysis.compare import pytest_benchmark, telebench_results
from telebench.analysis.compare.samples import Source
from telebench.errors import UserError
from telebench.results.schema import SCHEMA, migrate, read_results_bytes  # torch-free: compare starts quickly

WHAT = "a results.json from `telebench run` or a pytest-benchmark JSON from `pytest --benchmark-json=FILE`"


def read_source(path: Path) -> Source:
    if not path.exists():
        raise UserError(f"{path}: file not found; pass {WHAT}.")
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass {WHAT} inside it.")
    blob = read_results_bytes(path, WHAT)  # a device or FIFO is refused, not read forever
    try:
        data = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot be read ({exc}); pass {WHAT}.") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); pass {WHAT}.") from None
    if isinstance(data, dict) and "schema" in data:
        data = migrate(data)
        schema = data["schema"]
        if schema == SCHEMA:
            if data.get("kind") != "train":
                raise UserError(f"{path}: holds a {data.get('kind')} experiment, and compare checks train suites' "
                                f"timings; pass {WHAT}.")
            return telebench_results.read(path, data)
        if isinstance(schema, str) and schema.startswith("telebench.results/"):
            raise UserError(
                f"{path}: unknown results schema {schema!r}; this telebench reads {SCHEMA!r}, "
                "so upgrade telebench or rerun the suite with this version."
            )
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
        return pytest_benchmark.read(path, data)
    raise UserError(
        f"{path}: neither a telebench results file (schema {SCHEMA!r}) nor a pytest-benchmark JSON "
        f"(a `benchmarks` list); pass {WHAT}."
    )
