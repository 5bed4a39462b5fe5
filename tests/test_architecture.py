"""The package's shape, checked from source with `ast` alone (no telebench module is imported).

- no import cycles, counting imports inside functions (docs/architecture.md, "The layering rule");
- imports go only to the same or a lower layer, and one experiment kind never imports another;
- size limits on files and functions;
- package `__init__.py` files hold nothing but a docstring, except the public library faces.

Import edges: every `import x` and `from x import y` anywhere in a module's tree, at module level,
inside functions and inside `try:` blocks, *except* those under `if TYPE_CHECKING:` (they never run,
so they cannot make a cycle at import time; annotations that need them are strings). `from pkg import
name` goes to `pkg.name` when `pkg/name.py` or `pkg/name/` exists, else to `pkg` (its `__init__`).
No implicit edges are added to parent packages, although Python does run them: the face rule below
is what keeps those parents harmless. Dynamic imports count too where the module is a string literal:
a call whose first argument is the dotted name of a telebench module (`importlib.import_module(...)`,
config/registry.py's lazy `_lookup("telebench.training.datasets", ...)`) is an edge to that module;
`logging.getLogger("telebench....")` is not.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "telebench"
PACKAGE = "telebench"

# Top to bottom; an import may go only to the same or a lower layer.
LAYERS = ("cli", "commands", "profile", "experiments", "execution", "render", "analysis", "results",
          "config", "training", "symmetry", "errors")
EXEMPT = {PACKAGE, f"{PACKAGE}.__main__"}  # telebench/__init__.py and __main__.py belong to no layer
# Modules of experiments/ that every kind may share; the kind packages are its sub-packages.
SHARED_EXPERIMENTS = {"base", "registry", "runner"}
# The kinds must not reach up into the machinery that drives them.
KIND_FORBIDDEN = {f"{PACKAGE}.experiments.registry", f"{PACKAGE}.experiments.runner"}

MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
# Package faces that are public library APIs and may re-export names.
PUBLIC_FACES = {ROOT / "__init__.py", ROOT / "symmetry" / "__init__.py", ROOT / "profile" / "__init__.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under `node`, skipping the bodies of `if TYPE_CHECKING:` (their `else:` still counts)."""
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            yield from _import_nodes(child)
        return
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child)


def _dynamic_imports(tree: ast.Module, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module, line) of each call that names a telebench module by a string literal as its first argument."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        name = node.args[0].value
        if func != "getLogger" and isinstance(name, str) and name in modules:
            yield name, node.lineno


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted `name` that is a telebench module (None outside telebench)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(module: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _resolve(alias.name, modules)
            if target is not None:
                yield target
        return
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = module.split(".")
        if not modules[module].name == "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    if base != PACKAGE and not base.startswith(PACKAGE + "."):
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        target = sub if sub in modules else _resolve(base, modules)
        if target is not None:
            yield target


@cache
def _graph() -> dict[str, dict[str, int]]:
    """module → {imported module: line of the first such import}."""
    modules = _sources()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for node in _import_nodes(_tree(path)):
            for target in _targets(module, node, modules):
                if target != module:
                    edges.setdefault(target, node.lineno)
        for target, lineno in _dynamic_imports(_tree(path), modules):
            if target != module:
                edges.setdefault(target, lineno)
        graph[module] = edges
    return graph


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; returns every component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _shortest_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child in members and child not in parent and child != start:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a strongly connected component


def _layer(module: str) -> str | None:
    if module in EXEMPT:
        return None
    return module.split(".")[1]


def _kind(module: str) -> str | None:
    """The experiment kind package `module` belongs to (pairs, meta, correlation), else None."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "experiments" and parts[2] not in SHARED_EXPERIMENTS:
        return parts[2]
    return None


def _where(module: str) -> str:
    return str(_sources()[module].relative_to(ROOT.parent))


def test_the_graph_sees_lazy_imports() -> None:
    """A sanity check of the parser itself: the registry's lazy imports of the kinds are edges."""
    graph = _graph()
    assert f"{PACKAGE}.experiments.pairs.experiment" in graph[f"{PACKAGE}.experiments.registry"]
    assert f"{PACKAGE}.symmetry.groups" in graph[f"{PACKAGE}.symmetry"]
    assert f"{PACKAGE}.training.datasets" in graph[f"{PACKAGE}.config.registry"]  # importlib, by name


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = _strongly_connected(graph)
    lines = []
    for component in cycles:
        lines.append(f"modules in one cycle: {', '.join(component)}")
        path = _shortest_cycle(graph, component)
        lines.append("  for example:")
        for module, target in itertools.pairwise(path):
            lines.append(f"    {_where(module)}:{graph[module][target]} imports {target}")
    assert not cycles, "import cycles in telebench/ (imports inside functions count):\n" + "\n".join(lines)


def test_every_module_has_a_layer() -> None:
    unknown = sorted({_layer(m) for m in _sources() if _layer(m) is not None} - set(LAYERS))
    assert not unknown, f"telebench packages with no layer in LAYERS (add them where they belong): {unknown}"


def test_imports_go_down_the_layers() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}  # 0 is the top
    upward = []
    for module, edges in sorted(_graph().items()):
        here = _layer(module)
        for target, lineno in sorted(edges.items()):
            there = _layer(target)
            if here in rank and there in rank and rank[there] < rank[here]:
                upward.append(f"{_where(module)}:{lineno} ({here}) imports {target} ({there})")
    assert not upward, (f"imports from a lower layer to a higher one (order: {' > '.join(LAYERS)}):\n"
                        + "\n".join(upward))


def test_experiment_kinds_do_not_import_each_other() -> None:
    crossing = []
    for module, edges in sorted(_graph().items()):
        here = _kind(module)
        for target, lineno in sorted(edges.items()):
            there = _kind(target)
            if here and there and here != there:
                crossing.append(f"{_where(module)}:{lineno} (kind {here}) imports {target} (kind {there})")
    assert not crossing, "one experiment kind imports another:\n" + "\n".join(crossing)


def test_experiment_kinds_do_not_import_the_registry_or_runner() -> None:
    upward = [f"{_where(module)}:{lineno} imports {target}"
              for module, edges in sorted(_graph().items()) if _kind(module)
              for target, lineno in sorted(edges.items()) if target in KIND_FORBIDDEN]
    assert not upward, "experiment kinds reach up into experiments.registry / experiments.runner:\n" + "\n".join(upward)


def test_file_sizes() -> None:
    long = []
    for path in _sources().values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_FILE_LINES:
            long.append(f"{path.relative_to(ROOT.parent)}: {n} lines")
    assert not long, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(sorted(long))


def test_function_sizes() -> None:
    long = []
    for path in _sources().values():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # lineno is the `def` line: decorators excluded
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(sorted(long))


def test_package_faces_hold_only_a_docstring() -> None:
    """An `__init__.py` with code runs whenever any of its submodules is imported, so it hides edges."""
    busy = []
    for path in sorted(ROOT.rglob("__init__.py")):
        if path in PUBLIC_FACES:
            continue
        body = _tree(path).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]
        if body:  # an empty file is allowed too: it holds nothing at all
            busy.append(f"{path.relative_to(ROOT.parent)}:{body[0].lineno}: {type(body[0]).__name__}")
    assert not busy, "package __init__.py files with more than a docstring:\n" + "\n".join(busy)
