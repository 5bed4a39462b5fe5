"""The results file format: its schema version and a checked reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from telebench.errors import UserError

SCHEMA = "telebench.results/1"


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


