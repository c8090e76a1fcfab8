"""The package's import graph, function-level imports included: no circle anywhere, and each floor imports only
the floors below it (common < cache < pipeline | heads < serve; synthetic below heads and pipeline)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "affcli"
SKIP = {"tests", "bench", ".venv", ".git", ".pp", "build"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        if not SKIP & set(p.relative_to(ROOT).parts):
            out[_module_name(p)] = p
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (they never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(n.lineno for n in ast.walk(sub) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lines


def import_graph() -> dict[str, set[str]]:
    """{module: modules of the package it imports, at any depth of its code}; `from pkg import sub` counts as an
    import of the submodule `pkg.sub` when that is a module."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != PACKAGE:
                    continue
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                deps.update(subs or [target])
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_walk_sees_function_level_imports(graph):
    assert "affcli.heads.train.folds" in graph["affcli.heads.commands"], "an import inside a function is an arrow"
    assert len(graph) > 120


def test_no_import_circle(graph):
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


FORBIDDEN = {
    "common": ("cache", "pipeline", "heads", "serve", "synthetic", "pointcloud", "cli"),
    "cache": ("pipeline", "heads", "serve", "synthetic", "pointcloud", "cli"),
    "synthetic": ("pipeline", "heads", "serve", "pointcloud", "cli"),
    "pipeline": ("heads", "serve", "pointcloud", "cli"),
    "heads": ("pipeline", "serve", "pointcloud", "cli"),
    "pointcloud": ("cache", "pipeline", "heads", "serve", "synthetic", "cli"),
}


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_no_arrow_runs_back_up(graph, floor):
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[1:2] == [floor]
                 for d in deps if d.split(".")[1] in FORBIDDEN[floor])
    assert not bad, "\n".join(bad)
