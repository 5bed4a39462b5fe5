"""Reading suite and study YAML files with one-sentence errors (every experiment kind).

Input is never trusted to be small: before any parsing the file must be a regular file (not a device
or a FIFO, which would be read forever or block) of at most `MAX_SUITE_BYTES`; while composing, the
nesting depth and the number of values the document expands to (counting every alias as a copy of
what it names, so a "billion laughs" bomb of a few lines is refused before it is built) are capped.
Merge keys (`<<: *defaults`) work as YAML 1.1 defines them; a key written twice in one mapping is an
error, but a key that overrides one brought in by a merge is not.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from telebench.errors import UserError

MAX_SUITE_BYTES = 1 << 20  # 1 MiB; TELEBENCH_MAX_SUITE_BYTES raises it. The bundled suites are a few KB.
MAX_DEPTH = 32  # nested mappings and lists; a suite needs about 7
MAX_VALUES = 100_000  # values after expanding aliases; a suite has a few hundred
MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitError(yaml.YAMLError):
    """The document is too deep or expands to too much; the message is the sentence's middle part."""


def env_limit(env: str, default: int) -> int:
    """A byte limit from environment variable `env` (a positive integer), else `default`."""
    text = os.environ.get(env, "")
    return int(text) if text.isdigit() and int(text) > 0 else default


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def read_regular_file(path: Path, limit: int, *, what: str, too_big: str) -> bytes:
    """The bytes of regular file `path`, checked before anything is read: a device, FIFO or socket, or a
    file over `limit` bytes, is a UserError (`what` names the file to pass, `too_big` the fix)."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))  # a FIFO must not block
    except FileNotFoundError:
        raise UserError(f"{source}: no such file; pass {what}.") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot be read ({exc.strerror or exc}); pass {what}.") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{source}: is a folder; pass {what}.")
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{source}: is not a regular file (a device, pipe or socket); pass {what}.")
        if info.st_size > limit:
            raise UserError(f"{source}: is {_size(info.st_size)}, over the {_size(limit)} limit; {too_big}.")
        chunks, total = [], 0
        while total <= limit:  # the file may grow while it is read: never read past the limit
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UserError(f"{source}: grew past the {_size(limit)} limit while it was read; {too_big}.")
        return b"".join(chunks)
    except OSError as exc:
        raise UserError(f"{source}: cannot be read ({exc.strerror or exc}); pass {what}.") from None
    finally:
        os.close(fd)


class _SuiteLoader(yaml.SafeLoader):
    """SafeLoader with limits on depth and expansion, and duplicate keys refused (PyYAML keeps the last)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values: dict[int, int] = {}  # id(node) -> values it expands to, once the node is composed
        self._own: dict[int, list[yaml.Node]] = {}  # id(mapping node) -> the keys written in it

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if id(node) not in self._values:
                raise LimitError(f"the alias *{event.anchor} at line {event.start_mark.line + 1} is used inside "
                                 f"its own anchor's value, so the value would contain itself; write it out instead")
            return node
        start = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise LimitError(f"nests mappings and lists deeper than {MAX_DEPTH} levels at line {start.line + 1}; "
                             "a suite needs far fewer, so flatten it")
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        values = 1 + sum(self._values[id(child)] for child in children)
        if values > MAX_VALUES:
            raise LimitError(f"holds more than {MAX_VALUES:,} values by line {start.line + 1} (an alias *name "
                             "counts as a copy of what &name holds); a suite needs far fewer, so remove the "
                             "repeated aliases or long lists")
        self._values[id(node)] = values
        return node

    def _own_keys(self, node: yaml.MappingNode) -> list[yaml.Node]:
        """The keys written in `node` itself, as first seen: flattening a merge key (`<<: *defaults`) puts the
        merged keys in front of them (one written here overrides them, as YAML says), and a merged node can be
        flattened, when another node merges it, before it is constructed itself."""
        return self._own.setdefault(id(node), [key for key, _ in node.value if key.tag != MERGE_TAG])

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        self._own_keys(node)
        super().flatten_mapping(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node in self._own_keys(node):
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} is used as a key; keys must be plain names",
                    key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_value(text: str) -> Any:
    """One YAML value (a `--set` value, say) under the same limits as a suite file; yaml.YAMLError (LimitError
    among them) when it is not valid or too big."""
    loader = _SuiteLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path, example: str = "suites/quickstart.yaml") -> dict[str, Any]:
    """The top-level mapping of a suite or study file, with one-sentence errors (shared by every suite kind)."""
    source = str(path)
    if not path.exists():
        raise UserError(f"{source}: no such file; check the path (bundled suites are in suites/, "
                        f"e.g. {example}).")
    limit = env_limit("TELEBENCH_MAX_SUITE_BYTES", MAX_SUITE_BYTES)
    data = read_regular_file(path, limit, what="the suite's .yaml file",
                             too_big="a suite is a few KB, so pass the suite's .yaml file (or raise the limit "
                             "with TELEBENCH_MAX_SUITE_BYTES)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{source}: cannot be read ({exc}); pass a readable UTF-8 YAML file.") from None
    try:
        raw = load_value(text)
    except LimitError as exc:
        raise UserError(f"{source}: {exc}.") from None
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
