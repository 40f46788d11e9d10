"""The layering the code promises (README "Architecture"), checked on the source with ``ast``.

Every ``import`` statement of every module of ``metaauto/`` and ``flows/`` counts, wherever it is (a
function-level import is still a dependency), except those under ``if TYPE_CHECKING:``, which never run.

* no import cycles among modules;
* the core packages never import the adapters (``flows``, ``metaauto.cli``, ``metaauto.platform``,
  ``metaauto.dashboard``), and nothing in ``metaauto`` imports ``flows`` at all (the platform names
  flows by entrypoint strings only);
* ``tasks`` imports nothing above it, ``engine`` nothing from ``evaluation``/``tracking``/``search``;
* no module imports another module's ``_private`` name.

``KNOWN`` lists violations owned by work in flight elsewhere, each by name, so that this test passes
meanwhile and fails as soon as one is fixed and not removed from the list (or a new one appears).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("metaauto", "flows")
CORE = ("metaauto.tasks", "metaauto.learners", "metaauto.engine", "metaauto.evaluation", "metaauto.tracking",
        "metaauto.search", "metaauto.backbones", "metaauto.errors", "metaauto.config", "metaauto.runtime")
ADAPTERS = ("flows", "metaauto.cli", "metaauto.platform", "metaauto.dashboard")
LAYER_RULES = {  # package -> packages it must not import
    "metaauto.tasks": ("metaauto.learners", "metaauto.engine", "metaauto.evaluation", "metaauto.tracking", "metaauto.search"),
    "metaauto.engine": ("metaauto.evaluation", "metaauto.tracking", "metaauto.search"),
}

#: known violations, each with its reason (none today)
KNOWN: dict[str, set] = {"cycles": set(), "private": set(), "layers": set()}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    names: tuple[str, ...]  # names taken from it (``from target import a, b``)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for sub in child.orelse:
                    visit_one(sub)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


def imports() -> list[Import]:
    known = modules()
    result = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                result += [Import(name, alias.name, ()) for alias in node.names]
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from package import submodule`` depends on the submodule
            plain = []
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    result.append(Import(name, f"{base}.{alias.name}", ()))
                else:
                    plain.append(alias.name)
            if plain:
                result.append(Import(name, base, tuple(plain)))
    return result


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for imp in imports():
        if imp.target in known and imp.target != imp.source:
            edges[imp.source].add(imp.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def cycle_pairs(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Each cycle as the pairs of its modules that import each other directly, or its whole member list."""
    pairs: set[tuple] = set()
    for component in cycles(edges):
        mutual = {tuple(sorted((a, b))) for a in component for b in edges[a] if b in component and a in edges[b]}
        pairs |= mutual or {tuple(component)}
    return pairs


def test_the_checker_sees_imports_everywhere():
    edges = graph()
    assert "metaauto.tasks.table" in edges["metaauto.tasks"]
    assert "metaauto.cli" in edges["metaauto.cli.__main__"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycle_pairs(graph())
    assert found - KNOWN["cycles"] == set(), f"import cycles: {sorted(found - KNOWN['cycles'])}"
    assert KNOWN["cycles"] - found == set(), f"fixed, remove from KNOWN: {sorted(KNOWN['cycles'] - found)}"


def layer_violations() -> set[tuple[str, str]]:
    found = set()
    for imp in imports():
        source, target = imp.source, imp.target
        if _within(source, "metaauto") and _within(target, "flows"):
            found.add((source, target))
        if any(_within(source, core) for core in CORE) and any(_within(target, a) for a in ADAPTERS):
            found.add((source, target))
        for package, forbidden in LAYER_RULES.items():
            if _within(source, package) and any(_within(target, f) for f in forbidden):
                found.add((source, target))
    return found


def test_layers():
    found = layer_violations()
    assert found - KNOWN["layers"] == set(), f"imports against the layering: {sorted(found - KNOWN['layers'])}"
    assert KNOWN["layers"] - found == set(), f"fixed, remove from KNOWN: {sorted(KNOWN['layers'] - found)}"


def private_imports() -> set[tuple[str, str, str]]:
    found = set()
    for imp in imports():
        for name in imp.names:
            if name.startswith("_") and not name.startswith("__") and imp.target != imp.source:
                if _within(imp.target, "metaauto") or _within(imp.target, "flows"):
                    found.add((imp.source, imp.target, name))
    return found


def test_no_private_names_across_modules():
    found = private_imports()
    assert found - KNOWN["private"] == set(), f"private names imported: {sorted(found - KNOWN['private'])}"
    assert KNOWN["private"] - found == set(), f"fixed, remove from KNOWN: {sorted(KNOWN['private'] - found)}"


@pytest.mark.parametrize("flat", sorted(p.name for p in (REPO / "metaauto").glob("*.py")))
def test_only_small_shared_modules_sit_at_the_top(flat):
    assert flat in {"__init__.py", "backbones.py", "config.py", "errors.py", "runtime.py", "urls.py"}
