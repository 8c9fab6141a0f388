"""The package's import graph: no cycles (lazy imports inside functions included) and the layer rules.

Why statically, with `ast`: a lazy import only runs when its function does, so importing the package
proves nothing about it, and a cycle through one is still a cycle (a partly initialised module the day
the call order changes). `if TYPE_CHECKING:` blocks never run and are left out.

The layers themselves are written once, as the import-linter contracts in pyproject.toml (CI runs
`lint-imports` on them); the rules here read their module lists from there. What import-linter does
not check is checked here: that the package has no cycle at all, and that the front end (the CLI
included, whose lazy loads of the engine the worker and a foreground run need) loads neither torch nor
the engine when it is imported.

Run as a script to print the graph's cycles and the UI's lazy imports of torch or the engine:

    python tests/test_layers.py
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tuneassist"
# The front end: it must not load torch or the engine when it imports these (see DESIGN.md).
UI = ("tuneassist.cli", "tuneassist.tui", "tuneassist.session", "tuneassist.curves", "tuneassist.spec",
      "tuneassist.profiles")  # fmt: skip
ADVISOR = "tuneassist.advisor"
# Cycles still to be broken, each through a lazy import in a module of the streaming data path (the
# resident loader returns the streaming one, which subclasses it; the folder reader hands out items that
# decode with its own function). Listed so that any other cycle, or one of these growing, fails now;
# an entry that is gone fails too, so the list only ever shrinks. The goal is an empty list.
KNOWN_CYCLES: list[list[str]] = []


def contract(source: str) -> list[str]:
    """The modules pyproject.toml's import-linter contract for `source` forbids it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for c in config.get("tool", {}).get("importlinter", {}).get("contracts", []):
        if source in c.get("source_modules", []):
            return list(c["forbidden_modules"])
    raise LookupError(f"pyproject.toml has no import-linter contract for {source}")


def engine_and_torch() -> tuple[str, ...]:
    """What the UI process must not load: the UI contract's forbidden modules."""
    return tuple(contract("tuneassist.tui"))


@dataclass(frozen=True)
class Import:
    """One import statement's target module, and whether it runs when its module is imported."""

    target: str
    at_import: bool  # module level (not inside a function body)
    line: int


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its __init__)."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Import statements under `node`, each with whether it sits inside a function body."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:  # only the else branch runs
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, inner)


def _resolve(stmt: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules a statement imports: `from a import b` is a.b when that is a module, else a."""
    if isinstance(stmt, ast.Import):
        return [alias.name for alias in stmt.names]
    base = stmt.module or ""
    if stmt.level:
        parts = module.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - (stmt.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    subs = [f"{base}.{alias.name}" for alias in stmt.names if f"{base}.{alias.name}" in known]
    return subs if len(subs) == len(stmt.names) else [*subs, base]


def imports_of(files: dict[str, Path]) -> dict[str, list[Import]]:
    """Each module's imports (every statement, lazy ones included), targets resolved to module names."""
    known = set(files)
    out: dict[str, list[Import]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        out[name] = [
            Import(target, not lazy, stmt.lineno)
            for stmt, lazy in _walk(tree, in_function=False)
            for target in _resolve(stmt, name, is_package, known)
        ]
    return out


def internal_graph(imports: dict[str, list[Import]], package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (lazily or not)."""
    return {
        m: {
            i.target
            for i in imps
            if i.target.split(".")[0] == package and i.target != m and i.target in imports
        }
        for m, imps in imports.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of two or more nodes (or one importing itself), sorted:
    each is a set of modules that import one another, directly or through each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def loaded_at_import(start: str, imports: dict[str, list[Import]]) -> dict[str, list[str]]:
    """Every module that importing `start` loads (its parent packages' imports too), each with the chain
    of module-level imports that gets there; lazy imports are not followed."""
    chains: dict[str, list[str]] = {start: [start]}
    todo = [start]
    while todo:
        m = todo.pop()
        for holder in [m, *_parents(m)]:
            for imp in imports.get(holder, []):
                if imp.at_import and imp.target not in chains:
                    chains[imp.target] = [*chains[m], imp.target]
                    if imp.target in imports:
                        todo.append(imp.target)
    return chains


def ui_violations(imports: dict[str, list[Import]]) -> list[str]:
    """UI modules that load torch or the engine when imported, with the chain of imports."""
    bad = []
    for m in sorted(imports):
        if _under(m, UI):
            for target, chain in sorted(loaded_at_import(m, imports).items()):
                if _under(target, engine_and_torch()):
                    bad.append(" -> ".join(chain))
    return bad


def ui_lazy_engine_imports(imports: dict[str, list[Import]]) -> list[str]:
    """The UI's imports of torch or the engine inside functions (allowed: code the worker or a
    foreground run executes; listed so that a review can judge them)."""
    return [
        f"{m}:{i.line} {i.target}"
        for m in sorted(imports)
        if _under(m, UI)
        for i in imports[m]
        if not i.at_import and _under(i.target, engine_and_torch())
    ]


def advisor_violations(imports: dict[str, list[Import]]) -> list[str]:
    """The advisor's imports (lazy ones too) of torch, the engine, the run store or the front end."""
    forbidden = contract(ADVISOR)
    return [
        f"{m}:{i.line} imports {i.target}"
        for m in sorted(imports)
        if _under(m, (ADVISOR,))
        for i in imports[m]
        if _under(i.target, forbidden)
    ]


# -- the tests ----------------------------------------------------------------------------------


def _imports() -> dict[str, list[Import]]:
    return imports_of(module_files())


def test_the_package_has_no_import_cycle() -> None:
    cycles = find_cycles(internal_graph(_imports()))
    new = [c for c in cycles if c not in KNOWN_CYCLES]
    assert not new, "import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"these cycles are gone: take them off KNOWN_CYCLES: {gone}"


def test_the_advisor_is_numpy_only() -> None:
    forbidden = contract(ADVISOR)
    for layer in ("torch", "tuneassist.engine", "tuneassist.runs", "tuneassist.cli", "tuneassist.tui"):
        assert layer in forbidden  # the rule itself, as DESIGN.md states it
    assert not advisor_violations(_imports())


def test_the_ui_loads_neither_torch_nor_the_engine_at_import() -> None:
    assert {"torch", "tuneassist.engine"} <= set(engine_and_torch())
    assert not ui_violations(_imports())


def test_find_cycles_on_small_graphs() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "a"}}) == [["a", "b"], ["c", "d"]]


def _fake_package(tmp_path: Path, modules: dict[str, str]) -> dict[str, list[Import]]:
    for rel, code in modules.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    return imports_of(module_files(tmp_path, "pkg"))


def test_the_checker_sees_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    """A cycle that only a function's import closes, in a relative and an absolute spelling."""
    imports = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import f\n",
            "b.py": "def f():\n    from . import a\n    return a\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
            "sub/__init__.py": "",
            "sub/d.py": "from ..a import f\n",
        },
    )
    graph = internal_graph(imports, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set()  # TYPE_CHECKING imports never run
    assert graph["pkg.sub.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_checker_follows_module_level_imports_only(tmp_path: Path) -> None:
    imports = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "ui.py": "import pkg.mid\ndef run():\n    import torch\n",
            "mid.py": "try:\n    import torch.nn\nexcept ImportError:\n    pass\n",
        },
    )
    loaded = loaded_at_import("pkg.ui", imports)
    assert loaded["torch.nn"] == ["pkg.ui", "pkg.mid", "torch.nn"]
    assert [i.target for i in imports["pkg.ui"] if not i.at_import] == ["torch"]


if __name__ == "__main__":
    found = _imports()
    for cycle in find_cycles(internal_graph(found)):
        print("cycle:", " <-> ".join(cycle))
    for line in ui_violations(found):
        print("UI loads at import:", line)
    for line in advisor_violations(found):
        print("advisor:", line)
    for line in ui_lazy_engine_imports(found):
        print("UI lazy import:", line)
    sys.exit(0)
