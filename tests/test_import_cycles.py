"""No import cycles in the package: no module reaches itself through the imports of the
modules it imports.

Read statically from the source: every import a module makes at module level counts, the
ones under ``if TYPE_CHECKING:`` too (mypy follows them, and a cycle there is one the next
runtime import closes). Imports inside functions are tolerated: they run once every module is
loaded, which is how a module defers an optional or costly dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import mailsync

PACKAGE = Path(mailsync.__file__).parent


def _modules(root: Path, package: str) -> dict[str, Path]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not those inside functions."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.ClassDef):
            for field in ("body", "orelse", "finalbody"):
                yield from _module_level(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports at module level."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _module_level(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            found = submodules & modules.keys()
            targets.update(found)
            if len(found) < len(submodules):  # names from the module itself
                targets.add(base)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
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
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(imports(_modules(PACKAGE, "mailsync"))) == []


def test_a_cycle_is_found_and_imports_in_functions_are_not(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
    )
    (root / "b.py").write_text("from .sub import c\n")
    (root / "sub" / "c.py").write_text("from .. import a\n")
    (root / "d.py").write_text("import pkg.a\n")
    (root / "e.py").write_text("def later():\n    from pkg import d\n")
    (root / "f.py").write_text("try:\n    from pkg import e\nexcept ImportError:\n    e = None\n")
    graph = imports(_modules(root, "pkg"))
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.e"] == set()
    assert graph["pkg.f"] == {"pkg.e"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
