"""The package's modules import one another without circles: each module's own top-level imports
(those that run when it is imported, read from its source) form a graph with no cycle, so every
module can be read, tested and imported on its own, lower layers first (docs/design.md)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import charlstm

PACKAGE = Path(charlstm.__file__).parent


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="charlstm."))


def source_of(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def top_level_imports(module: str, known: set[str]) -> set[str]:
    """The package modules `module` imports when it is imported: module-level statements only,
    not imports inside functions (made on first use) nor under `if TYPE_CHECKING:`."""
    tree = ast.parse(source_of(module).read_text(encoding="utf-8"))
    package = module if source_of(module).name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return {name for name in found if name in known and name != module}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import one another, as a path that returns
    to where it began."""
    found: list[list[str]] = []
    done: set[str] = set()
    for start in sorted(graph):
        cycle = _cycle_from(start, graph, [], done)
        if cycle:
            found.append(cycle)
            done.update(cycle)
    return found


def _cycle_from(node: str, graph: dict[str, set[str]], path: list[str], done: set[str]) -> list[str] | None:
    """A cycle reachable from `node` by a depth-first walk along `path`; modules in `done` lead to none."""
    if node in path:
        return [*path[path.index(node) :], node]
    if node in done:
        return None
    path.append(node)
    for imported in sorted(graph[node]):
        cycle = _cycle_from(imported, graph, path, done)
        if cycle:
            return cycle
    path.pop()
    done.add(node)
    return None


def test_every_module_imports():
    for module in modules():
        if module != "charlstm.__main__":  # `python -m charlstm`: importing it runs the CLI
            importlib.import_module(module)


def test_the_import_graph_has_no_cycle():
    known = set(modules()) | {"charlstm"}
    graph = {module: top_level_imports(module, known) for module in known}
    assert graph["charlstm.trainer"] >= {"charlstm.sizing", "charlstm.model"}, "the reader sees the imports"
    found = cycles(graph)
    assert not found, "import circles: " + "; ".join(" -> ".join(cycle) for cycle in found)
