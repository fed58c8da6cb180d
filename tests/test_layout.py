"""The layout shows the design: no import cycle in ``spec/``, and the oracle never imports the
reference (a bug they shared would hide)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, everywhere: bool = False) -> set[str]:
    """The modules that ``path`` imports when it is imported: its top-level imports, not those
    inside functions or under ``if TYPE_CHECKING:`` (with ``everywhere``: all of them).
    Relative imports are resolved; ``from a import b`` counts as ``a`` and ``a.b``."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if everywhere else tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports at import time."""
    paths = sorted((ROOT / package).rglob("*.py"))
    names = {module_name(p) for p in paths}
    return {module_name(p): (imports(p) & names) - {module_name(p)} for p in paths}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``edges``, if there is any."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        if state.get(name) == "active":
            return [*stack[stack.index(name):], name]
        if state.get(name) == "done":
            return None
        state[name] = "active"
        stack.append(name)
        for other in sorted(edges.get(name, ())):
            found = visit(other)
            if found:
                return found
        stack.pop()
        state[name] = "done"
        return None

    return next((c for c in map(visit, sorted(edges)) if c), None)


def test_spec_has_no_import_cycle() -> None:
    edges = graph("spec")
    assert "spec.plugin" in edges["spec.fixtures"]  # the graph is read at all
    found = cycle(edges)
    assert found is None, " -> ".join(found or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("path", sorted((ROOT / "spec" / "oracle").glob("*.py")),
                         ids=lambda p: p.name)
def test_the_oracle_never_imports_the_reference(path: Path) -> None:
    assert "torch" in imports(path, everywhere=True) or path.name.startswith("_")
    assert not {m for m in imports(path, everywhere=True) if m.split(".")[0] == "transformer"}
