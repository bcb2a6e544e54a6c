"""The planner is pure: it imports nothing that does I/O, and big inputs give the same plan.

The import graph is read from the source (``import`` statements, followed recursively inside
``sdp_node`` and ``sdp_reconciler``), so a lazy import inside a function counts too. A fresh
interpreter importing ``sdp_reconciler.planner.planning`` is checked as well, for what third-party
packages pull in.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

from msgspec.structs import replace

from sdp_reconciler.planner.planning import plan
from sdp_reconciler.state.models import NodeType
from tests.planning.builders import (
    GATEWAY_NODE,
    HEADS,
    MICRO,
    Desired,
    branch,
    by_name,
    go_repository,
    node,
    nodes,
    ocp,
    plan_pass,
    sandbox,
    sha,
    target,
)
from tests.planning.fakes import InMemoryNodes

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("sdp_node", "sdp_reconciler")
NETWORK_PROCESS_DATABASE = {
    "socket", "ssl", "selectors", "subprocess", "multiprocessing", "sqlite3", "httpx",
    "requests", "urllib.request", "http.client", "http.server", "docker", "dulwich", "asyncio",
    "threading", "concurrent.futures", "uvicorn", "starlette", "sse_starlette", "watchfiles",
    "getpass", "shutil", "tempfile",
}
PATH_IO = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "unlink", "mkdir",
           "iterdir", "exists", "stat", "glob", "rglob", "touch", "rename"}
OS_IO = {"replace", "remove", "rename", "rmtree", "system", "popen", "listdir", "scandir"}


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def import_graph(start: str) -> dict[str, set[str]]:
    """Project module -> every module it names in an import (project or not)."""
    graph: dict[str, set[str]] = {}
    pending = [start]
    while pending:
        name = pending.pop()
        path = module_file(name)
        if name in graph or path is None:
            continue
        imported: set[str] = set()
        for item in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(item, ast.Import):
                imported |= {alias.name for alias in item.names}
            elif isinstance(item, ast.ImportFrom) and item.module:
                assert item.level == 0, f"{name}: relative import"
                imported.add(item.module)
                imported |= {f"{item.module}.{alias.name}" for alias in item.names}
        graph[name] = imported
        pending += [m for m in imported if m.split(".")[0] in PROJECT and module_file(m)]
    return graph


def forbidden(imported: str, names: set[str]) -> bool:
    return any(imported == n or imported.startswith(n + ".") for n in names)


def test_the_planner_imports_no_network_process_or_database_module() -> None:
    graph = import_graph("sdp_reconciler.planner.planning")
    assert {"sdp_reconciler.planner.planning", "sdp_reconciler.planner.specs",
            "sdp_node.protocol"} <= set(graph)
    assert "sdp_reconciler.observe.node_client" not in graph
    assert "sdp_reconciler.apply.applying" not in graph
    offending = sorted((module, imported) for module, names in graph.items()
                       for imported in names if forbidden(imported, NETWORK_PROCESS_DATABASE))
    assert offending == []


def test_the_planner_calls_no_os_system_or_popen() -> None:
    for module in import_graph("sdp_reconciler.planner.planning"):
        path = module_file(module)
        assert path is not None
        source = path.read_text()
        for call in ("os.system", "os.popen", "os.exec", "os.spawn", "eval(", "exec("):
            assert call not in source, f"{module} uses {call}"


def test_importing_the_planner_loads_no_network_client_or_database() -> None:
    program = "import sys, sdp_reconciler.planner.planning; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", program], capture_output=True,
                                text=True, check=True, cwd=ROOT).stdout.split())
    # socket, selectors and threading come with pydantic (importlib.metadata → email), so
    # only what SDP itself would add is checked here; the static walk above covers SDP.
    assert sorted(loaded & {"httpx", "docker", "dulwich", "sqlite3", "_sqlite3", "subprocess",
                            "urllib.request", "http.client", "asyncio", "concurrent.futures",
                            "uvicorn", "starlette", "watchfiles"}) == []


def file_io_calls(module: str) -> list[str]:
    """Calls that read or write files: ``open(...)``, ``path.read_text()``, ``os.replace()``..."""
    path = module_file(module)
    assert path is not None
    found = []
    for item in ast.walk(ast.parse(path.read_text())):
        if not isinstance(item, ast.Call):
            continue
        function = item.func
        if isinstance(function, ast.Name) and function.id == "open":
            found.append(f"{module}:{item.lineno} open()")
        elif isinstance(function, ast.Attribute):
            on_os = isinstance(function.value, ast.Name) and function.value.id in ("os", "shutil")
            if function.attr in PATH_IO or (on_os and function.attr in OS_IO):
                found.append(f"{module}:{item.lineno} {function.attr}()")
    return found


def test_the_planner_imports_no_module_that_reads_or_writes_files() -> None:
    calls = [c for module in sorted(import_graph("sdp_reconciler.planner.planning"))
             for c in file_io_calls(module)]
    assert calls == []


# -- determinism at scale -------------------------------------------------------------------------

SERVICES = ("account", "payment", "user", "ledger", "search")


def big_installation() -> InMemoryNodes:
    micro_2 = node("micro-2", NodeType.MICRO, "10.0.0.3", (9001, 9999))
    installation = nodes(micro_ports=(9001, 9999), micro_repositories=SERVICES[:3],
                         extra={micro_2: [go_repository(s) for s in SERVICES[3:]]})
    gateway = installation.nodes[GATEWAY_NODE]
    installation.nodes[GATEWAY_NODE] = replace(gateway, node=gateway.node.model_copy(
        update={"ports": gateway.node.ports.model_copy(update={"last": 8479})}  # type: ignore[union-attr]
    ))
    # the gateway's commit carries a <key>_url for every service it routes
    installation.committed_routes["erangel"] = {
        s: f"https://{s}.ocp.company.invalid" for s in SERVICES}
    return installation


def big_state(count: int, *, changed: bool) -> Desired:
    sandboxes = []
    for index in range(count):
        services = {name: branch("main") for name in SERVICES}
        if changed and index % 7 == 0:
            services["payment"] = ocp()
        if changed and index % 11 == 0:
            services["user"] = target("https://user.staging.company.invalid")
        if changed and index % 13 == 0:
            services["account"] = branch("feature/login-error")
        sandboxes.append(sandbox(f"sb-{index:03d}", services,
                                 suspended=changed and index % 17 == 0))
    if changed:
        sandboxes = sandboxes[: count - 5]
    heads = {**HEADS, "ledger": {"main": sha("1ed6e12")}, "search": {"main": sha("5ea2c11")}}
    if changed:
        heads["ledger"] = {"main": sha("1ed6e13")}
    return Desired(by_name(*sandboxes), heads=heads)


def test_plan_of_200_sandboxes_by_5_services_is_deterministic() -> None:
    observed = big_installation()
    before = big_state(200, changed=False)
    observed.apply(plan_pass(before, observed).plan)
    after = big_state(200, changed=True)
    started = time.perf_counter()
    first = plan_pass(after, observed)
    elapsed = time.perf_counter() - started
    second = plan_pass(after, observed)
    assert first.plan == second.plan
    assert first.plan.to_json() == second.plan.to_json()
    reversed_world = replace(first.world, nodes=dict(reversed(list(first.world.nodes.items()))))
    third = plan(
        sandboxes=dict(reversed(list(after.sandboxes.items()))), world=reversed_world,
        placements=dict(reversed(list(first.placements.items()))),
        allocations=list(reversed(first.allocations)),
    )
    assert third == first.plan
    assert third.to_json() == first.plan.to_json()
    assert len(first.plan.changes) > 300, first.plan.summary()
    assert elapsed < 20, f"planning 200 x 5 took {elapsed:.1f} s"
    assert first.plan.nodes() == [GATEWAY_NODE, MICRO, "micro-2"]


def test_a_big_converged_installation_plans_nothing() -> None:
    observed = big_installation()
    state = big_state(200, changed=False)
    observed.apply(plan_pass(state, observed).plan)
    assert plan_pass(state, observed).plan.changes == ()
