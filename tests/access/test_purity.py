"""The judging core is pure: the model, the permission table, the semantic diff, identity,
judging, the decision and its rendering import nothing that does I/O and call no file
function. Only ``signatures`` (ssh-keygen), ``gitrange`` (dulwich) and the entry points
(``authorize``, ``command``) touch the outside world.

The import graph is read from the source as in tests/planning/test_purity.py, except that
imports under ``if TYPE_CHECKING:`` are types only and do not count.
"""

from __future__ import annotations

import ast

import pytest

from tests.planning.test_purity import (
    NETWORK_PROCESS_DATABASE,
    PROJECT,
    file_io_calls,
    forbidden,
    module_file,
)

PURE = ["model", "permissions", "changes", "identity", "facts", "provenance", "judging",
        "effects", "decision", "render"]
IMPURE = {"signatures", "gitrange", "authorize", "command"}


def _runtime_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit([c for c in children if isinstance(c, ast.stmt)])

    visit(tree.body)
    return names


def runtime_graph(start: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    pending = [start]
    while pending:
        name = pending.pop()
        path = module_file(name)
        if name in graph or path is None:
            continue
        graph[name] = _runtime_imports(ast.parse(path.read_text(), str(path)))
        pending += [m for m in graph[name] if m.split(".")[0] in PROJECT and module_file(m)]
    return graph


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_io(module: str) -> None:
    graph = runtime_graph(f"sdp_reconciler.access.{module}")
    reached = {m.removeprefix("sdp_reconciler.access.") for m in graph}
    offending = sorted((m, i) for m, names in graph.items() for i in names
                       if forbidden(i, NETWORK_PROCESS_DATABASE))
    assert offending == []
    assert not reached & IMPURE
    assert "sdp_reconciler.state.loading" not in graph
    assert "sdp_reconciler.state.sources" not in graph


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_reads_and_writes_no_file(module: str) -> None:
    graph = runtime_graph(f"sdp_reconciler.access.{module}")
    assert [call for m in sorted(graph) for call in file_io_calls(m)] == []


def test_the_pass_and_the_page_are_not_imported_by_access() -> None:
    for module in [*PURE, *IMPURE]:
        graph = runtime_graph(f"sdp_reconciler.access.{module}")
        assert not {m for m in graph if m.startswith((
            "sdp_reconciler.apply.reconcile", "sdp_reconciler.planner.planning",
            "sdp_reconciler.apply.applying",
            "sdp_reconciler.apply.status", "sdp_reconciler.web"))}, module
