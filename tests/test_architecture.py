"""The shape of the package, checked statically (issue 12's "done when").

* no import cycles between mfjax modules (module-level imports);
* at most 10 package-internal imports inside functions (optional dependencies and the CLI's lazy
  dispatch only);
* no toy / synthetic modules in the library (they live under tests/helpers);
* ``Potential(`` is constructed in one place (``ModelSpec.module``), an optax optimiser is built
  only in ``mfjax/training/optim.py``;
* every module stays under 400 lines;
* the batch graph is a ``jraph.GraphsTuple``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import jraph

from mfjax.data.graph import Graph

ROOT = Path(__file__).resolve().parent.parent / "mfjax"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[bool, int, list[str]]]:
    """(at module level, line, imported mfjax names) of every import of mfjax code in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level `if` / `try` count as module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        names = [n for n in names if n == "mfjax" or n.startswith("mfjax.")]
        if names:
            found.append((id(node) in top_level, node.lineno, names))
    return found


def test_no_import_cycles():
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for top, _, names in _imports(path):
            if top:
                graph[name].update(n for n in names if n in modules and n != name)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_few_imports_inside_functions():
    inner = [f"{path.relative_to(ROOT.parent)}:{line} {names[0]}"
             for path in _modules().values() for top, line, names in _imports(path) if not top]
    assert len(inner) <= 10, "\n".join(inner)


def test_no_toys_in_the_library():
    names = [p.stem for p in ROOT.rglob("*.py")]
    assert not [n for n in names if "toy" in n or "synthetic" in n]


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for p in ROOT.rglob("*.py")}


def _calls(path: Path) -> set[str]:
    """Dotted names of every function called in ``path`` (``optax.adam``, ``Potential``, ...)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                out.add(func.id)
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                out.add(f"{func.value.id}.{func.attr}")
    return out


OPTIMISERS = {f"optax.{name}" for name in ("adam", "adamw", "sgd", "lamb", "lion", "chain", "scale_by_adam",
                                            "inject_hyperparams")}


def test_one_place_builds_the_model_and_the_optimiser():
    calls = {p.relative_to(ROOT.parent).as_posix(): _calls(p) for p in ROOT.rglob("*.py")}
    assert sorted(p for p, c in calls.items() if "Potential" in c) == ["mfjax/model/spec.py"]
    assert sorted(p for p, c in calls.items() if c & OPTIMISERS) == ["mfjax/training/optim.py"]


def test_modules_stay_small():
    long = {p.relative_to(ROOT.parent).as_posix(): n for p, text in _sources().items()
            if (n := len(text.splitlines())) > 400}
    assert long == {}


def test_the_batch_graph_is_a_jraph_graphs_tuple():
    assert Graph is jraph.GraphsTuple
