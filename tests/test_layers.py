"""The package's imports go one way: no cycle, no edge a layer may not have.

Reads every module of ``grokwidgets`` with :mod:`ast` (nothing is imported), including imports
inside functions and under ``TYPE_CHECKING``, and checks them against the layers of
``docs/architecture.md``. A failure names the offending edge and the line it is on.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "grokwidgets"

#: Who may import whom, by top-level part of the package (``grokwidgets.<part>``). The part
#: itself is always allowed (its own modules); ``_names``, ``_version`` and ``_transforms`` are
#: for everyone.
ALLOWED: dict[str, set[str]] = {
    "_names": set(),
    "_version": set(),
    "_transforms": set(),
    "presets": set(),
    "notebook": set(),
    "tasks": set(),
    "models": {"tasks"},
    "diagnostics": {"tasks", "models"},
    "store": set(),
    "monitor": {"diagnostics", "store", "tasks", "models"},
    "train": {"monitor", "diagnostics", "store", "tasks", "models", "presets"},
    "views": {"diagnostics"},
    "replay": {"train", "monitor", "diagnostics", "store", "tasks", "models"},
    "report": {"views", "diagnostics", "store"},
    "widgets": {"views", "replay", "train", "monitor", "diagnostics", "store", "tasks", "models"},
    "sweeps": {
        "views",
        "train",
        "replay",
        "monitor",
        "diagnostics",
        "store",
        "tasks",
        "models",
        "presets",
    },
    "cli": {
        "report",
        "sweeps",
        "replay",
        "train",
        "monitor",
        "diagnostics",
        "store",
        "tasks",
        "models",
        "presets",
    },
}
SHARED = {"_names", "_version", "_transforms"}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both dotted module names) at ``where``."""

    source: str
    target: str
    where: str
    name: str = ""  # the imported name, for ``from X import name``


def _modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = ["grokwidgets", *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module of the package."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _edges(modules: dict[str, Path] = MODULES) -> list[Edge]:
    edges = []
    for module, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = module if is_pkg else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.parent.name}/{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "grokwidgets":
                        edges.append(Edge(module, _resolve(alias.name, modules), where))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target.split(".")[0] != "grokwidgets":
                    continue
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    if full in modules:  # `from pkg import module`
                        edges.append(Edge(module, full, where))
                    else:
                        edges.append(Edge(module, _resolve(target, modules), where, alias.name))
    return edges


EDGES = _edges()


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_has_a_rule():
    parts = {_part(m) for m in MODULES} - {""}
    missing = sorted(parts - set(ALLOWED))
    assert not missing, f"no layer rule for grokwidgets.{missing}: add them to ALLOWED"


def test_layers_import_only_downward():
    bad = []
    for e in EDGES:
        src, dst = _part(e.source), _part(e.target)
        if src == "":  # the top-level package is the facade: it may import anything
            continue
        if dst == "":
            bad.append(f"{e.where}: {e.source} imports the top-level package grokwidgets")
        elif dst != src and dst not in SHARED and dst not in ALLOWED[src]:
            bad.append(f"{e.where}: {e.source} -> {e.target} ({src} may not import {dst})")
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_a_part():
    bad = []
    for e in EDGES:
        src, dst = _part(e.source), _part(e.target)
        if src == dst or src == "" or dst in SHARED:
            continue
        private_module = any(p.startswith("_") for p in e.target.split(".")[2:])
        if private_module or e.name.startswith("_"):
            shown = f"{e.target}.{e.name}" if e.name else e.target
            bad.append(f"{e.where}: {e.source} uses private {shown}")
    assert not bad, "private names used across parts:\n" + "\n".join(bad)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in EDGES:
        if e.target != e.source and e.target in graph:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    cycles = _cycles()
    lines = []
    for comp in cycles:
        inside = [e for e in EDGES if e.source in comp and e.target in comp]
        lines.append(" <-> ".join(comp))
        lines += [f"    {e.where}: {e.source} -> {e.target}" for e in inside]
    assert not cycles, "import cycles:\n" + "\n".join(lines)


@pytest.mark.parametrize(
    ("part", "source", "expect"),
    [
        ("train", "from grokwidgets.widgets.live import LiveMonitor\n", "train may not import"),
        ("diagnostics", "def f():\n    from grokwidgets.store import x\n", "may not import store"),
        ("store", "import grokwidgets\n", "imports the top-level package"),
    ],
)
def test_the_checker_sees_a_bad_edge(tmp_path, monkeypatch, part, source, expect):
    """The rules catch a planted edge, top-level or lazy (so a pass means something)."""
    for sub in ("train", "diagnostics", "store", "widgets"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "__init__.py").write_text("")
    (tmp_path / "widgets" / "live.py").write_text("")
    (tmp_path / part / "planted.py").write_text(source)
    modules = _modules(tmp_path)
    monkeypatch.setitem(globals(), "EDGES", _edges(modules))
    with pytest.raises(AssertionError, match=expect):
        test_layers_import_only_downward()


def test_the_checker_sees_a_cycle(monkeypatch):
    edges = [*EDGES]
    edges.append(Edge("grokwidgets.tasks.base", "grokwidgets.tasks.modular", "planted:1"))
    edges.append(Edge("grokwidgets.tasks.modular", "grokwidgets.tasks.base", "planted:2"))
    monkeypatch.setitem(globals(), "EDGES", edges)
    with pytest.raises(
        AssertionError, match="grokwidgets.tasks.base <-> grokwidgets.tasks.modular"
    ):
        test_no_import_cycle()
