"""The import rules of the layers (issue 10), read from the source like test_purity.py.

Every ``import`` counts, also one inside a function. The rules, as each package's
``__init__`` states them:

* ``planner`` does no I/O: none of its modules imports, even indirectly, a network, process,
  database or file-writing module, nor ``observe``, ``apply``, ``cli``, ``web`` or ``history``;
* ``state`` imports no ``planner``, ``observe``, ``apply``, ``cli`` or ``web``;
* ``observe`` imports no ``apply``, ``cli`` or ``web``; ``apply`` no ``cli`` or ``web``;
* nothing but ``cli`` itself imports ``cli``;
* the page (``web``) imports nothing that changes what nodes run: no ``apply`` (the pass and
  the applier), no ``cli`` (whose commands run passes), and it never calls the node client's
  mutating methods;
* ``sdp_node`` never imports ``sdp_reconciler``; ``sdp_reconciler`` takes from ``sdp_node``
  only the shared modules (wire contract, names, redaction, errors, the git remote client,
  the metrics wire and the pydantic plugin guard),
  which import nothing else of ``sdp_node``;
* there is no import cycle among the modules of ``sdp_reconciler``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.planning.test_purity import NETWORK_PROCESS_DATABASE, ROOT, forbidden, module_file

SHARED_NODE = {"sdp_node.protocol", "sdp_node.naming", "sdp_node.redact", "sdp_node.errors",
               "sdp_node.gitremote", "sdp_node.metricswire", "sdp_node.pydanticplugins",
               "sdp_node.numbers"}
WRITES = {"ruamel.yaml", "pickle", "shelve", "sdp_reconciler.history"}
NODE_MUTATIONS = {"apply", "acquire_lease", "renew_lease", "release_lease"}
"""the node client's methods that change a node (what it runs, who holds its lease)"""


def modules(package: str) -> list[str]:
    base = ROOT.joinpath(*package.split("."))
    found = []
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def imports_of(name: str) -> set[str]:
    """Every module ``name`` names in an import statement, anywhere in its file, resolved to
    the module it means: ``from a.b import c`` is ``a.b.c`` when that is a module (then the
    package ``a.b`` is only its container), else ``a.b``."""
    path = module_file(name)
    assert path is not None, name
    out: set[str] = set()
    for item in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(item, ast.Import):
            out |= {alias.name for alias in item.names}
        elif isinstance(item, ast.ImportFrom) and item.module:
            assert item.level == 0, f"{name}: relative import"
            submodules = {f"{item.module}.{a.name}" for a in item.names
                          if module_file(f"{item.module}.{a.name}") is not None}
            out |= submodules
            if len(submodules) < len(item.names):  # names defined in item.module itself
                out.add(item.module)
    return out


def project(name: str) -> bool:
    return name.split(".")[0] in ("sdp_node", "sdp_reconciler") and module_file(name) is not None


def reached(start: str) -> set[str]:
    """Every module ``start`` imports, directly or through project modules."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        name = pending.pop()
        for imported in imports_of(name):
            if imported not in seen:
                seen.add(imported)
                if project(imported):
                    pending.append(imported)
    return seen


def pkg(layer: str) -> str:
    return f"sdp_reconciler.{layer}"


def violations(package: str, banned: set[str]) -> Iterator[tuple[str, str]]:
    for module in modules(package):
        for imported in sorted(reached(module)):
            if forbidden(imported, banned):
                yield module, imported


def test_the_planner_imports_no_io_and_no_outer_layer() -> None:
    banned = NETWORK_PROCESS_DATABASE | WRITES | {
        pkg("observe"), pkg("apply"), pkg("cli"), pkg("web"), "os", "pathlib", "sdp_node.git",
    }
    assert list(violations(pkg("planner"), banned)) == []
    assert len(modules(pkg("planner"))) >= 8


@pytest.mark.parametrize(("layer", "outer"), [
    ("state", ("planner", "observe", "apply", "cli", "web")),
    ("observe", ("apply", "cli", "web")),
    ("apply", ("cli", "web")),
    ("access", ("planner", "observe", "apply", "cli", "web")),
])
def test_a_layer_imports_no_layer_above_it(layer: str, outer: tuple[str, ...]) -> None:
    assert list(violations(pkg(layer), {pkg(o) for o in outer})) == []


def test_only_the_cli_imports_the_cli() -> None:
    outside = [m for m in modules("sdp_reconciler") if not m.startswith(pkg("cli"))]
    assert [(m, i) for m in outside for i in imports_of(m) if forbidden(i, {pkg("cli")})] == []


def test_the_page_imports_nothing_that_changes_what_nodes_run() -> None:
    assert list(violations(pkg("web"), {pkg("apply"), pkg("cli")})) == []
    calls = []
    for module in modules(pkg("web")):
        path = module_file(module)
        assert path is not None
        for item in ast.walk(ast.parse(path.read_text())):
            if isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute) \
                    and item.func.attr in NODE_MUTATIONS:
                calls.append((module, item.func.attr, item.lineno))
    assert calls == []


def test_the_mutation_names_are_the_node_clients() -> None:
    """The names the page must not call are the node client's (so the rule above checks
    something real)."""
    client = ast.parse((ROOT / "sdp_reconciler/observe/node_client.py").read_text())
    methods = {f.name for c in ast.walk(client) if isinstance(c, ast.ClassDef)
               for f in c.body if isinstance(f, ast.FunctionDef)}
    assert methods >= NODE_MUTATIONS


def test_sdp_node_never_imports_the_reconciler() -> None:
    offending = [(m, i) for m in modules("sdp_node") for i in imports_of(m)
                 if forbidden(i, {"sdp_reconciler"})]
    assert offending == []


def test_the_reconciler_takes_only_the_shared_modules_of_sdp_node() -> None:
    taken = {i for m in modules("sdp_reconciler") for i in imports_of(m)
             if i.split(".")[0] == "sdp_node" and module_file(i) is not None}
    assert taken <= SHARED_NODE, taken - SHARED_NODE
    for shared in SHARED_NODE:
        inner = {i for i in imports_of(shared) if i.split(".")[0] == "sdp_node"}
        assert inner <= SHARED_NODE, (shared, inner - SHARED_NODE)


def cycles(names: list[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {n: sorted(i for i in imports_of(n) if i in set(names) and i != n) for n in names}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in names:
        if name not in index:
            visit(name)
    return found


def test_no_import_cycles_in_the_reconciler() -> None:
    assert cycles(modules("sdp_reconciler")) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle hidden in a function-level import is found (the loading → rules → resolve →
    loading cycle of issue 10 was one)."""
    files = {
        "cyc_a": "import cyc_b\n",
        "cyc_b": "def f() -> None:\n    from cyc_c import g\n",
        "cyc_c": "from cyc_a import x\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    import tests.planning.test_layers as me

    monkeypatch.setattr(me, "module_file", lambda n: tmp_path / f"{n}.py"
                        if (tmp_path / f"{n}.py").exists() else None)
    assert cycles(list(files)) == [["cyc_a", "cyc_b", "cyc_c"]]
