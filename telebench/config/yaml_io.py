"""Reading suite and study YAML files with one-sentence errors (every experiment kind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from telebench.errors import UserError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a suite author almost always meant something else."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, example: str = "suites/quickstart.yaml") -> dict[str, Any]:
    """The top-level mapping of a suite or study file, with one-sentence errors (shared by every suite kind)."""
    source = str(path)
    if not path.exists():
        raise UserError(f"{source}: no such file; check the path (bundled suites are in suites/, "
                        f"e.g. {example}).")
    if path.is_dir():
        raise UserError(f"{source}: is a folder; pass the suite's .yaml file.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot be read ({exc}); pass a readable UTF-8 YAML file.") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise UserError(f"{source}: is not valid YAML{where} ({problem}); fix the syntax there "
                        "(indent with spaces, quote strings that hold ': ').") from None
    if raw is None:
        raise UserError(f"{source}: is empty; a suite needs at least `name` and `cases` (see docs/suite-format.md).")
    if not isinstance(raw, dict):
        raise UserError(f"{source}: the top level must be a mapping with name, defaults and cases, "
                        f"not a {type(raw).__name__}.")
    return raw


