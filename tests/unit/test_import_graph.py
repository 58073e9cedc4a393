"""Imports point one way: no linkpool module imports one that imports it back, at top level or
inside a function, directly or through others (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import linkpool

ROOT = Path(linkpool.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The linkpool modules ``path`` names in any import statement; ``from a import b`` counts
    as importing ``a.b`` when that is a module, else ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name in known}


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports from ``start`` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        name, path = stack.pop()
        for target in sorted(graph[name]):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    known = modules()
    graph = {name: imports_of(path, known) - {name} for name, path in known.items()}

    cycles = [cycle for name in graph if (cycle := cycle_from(name, graph)) is not None]

    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_graph_sees_imports_inside_functions() -> None:
    known = modules()
    tools = imports_of(known["linkpool.cli.tools"], known)

    assert "linkpool.demo" in tools  # imported inside demo_command only
    assert "linkpool.cli.app" in tools
