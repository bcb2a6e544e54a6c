"""Issue 5: ``planning.plan()`` alone (and ``ports.allocate``, ``placement.place``) as it grows.

Inputs are built in memory, no agent and no state directory: N sandboxes x 5 Go services
(account, payment, user, order, notify, each on a branch) plus a gateway each; one MICRO node
and one GATEWAY node; one environment with two variables and one secret. Two worlds:

* **new**: the nodes run nothing yet (every container, network and gateway is created);
* **in sync**: the nodes run exactly what the "new" plan would create (labels with the spec
  hash, networks, gateways whose live routes are the planned ones, last applied specs), and
  ``ports.yaml`` holds the allocations: the plan must be empty (checked).

Each function is timed in-process over several repetitions (median), sizes and worlds
interleaved round by round. Growth is reported as time per sandbox and the ratio of the
1,000-sandbox time to the 250-sandbox one (4 = linear, 16 = quadratic).

    .venv/bin/python bench/bench_plan.py [--sizes 250 500 1000] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_average, ratio, say, table, write_results

from sdp_node.naming import GATEWAY
from sdp_node.protocol import (
    LABEL_BRANCH,
    LABEL_COMMIT,
    LABEL_INSTANCE,
    LABEL_KIND,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PORT,
    LABEL_REPOSITORY,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    LABEL_SPEC,
    DeployGateway,
    DeployService,
    EnsureNetwork,
    NodeInfo,
    NodeType,
    Observation,
    ObservedContainer,
    ObservedGateway,
    ObservedNetwork,
    RepositoryInfo,
    RepositoryKind,
    Secret,
)
from sdp_reconciler.planner.placement import Placement, place
from sdp_reconciler.planner.plan import Plan
from sdp_reconciler.planner.planning import plan
from sdp_reconciler.planner.ports import Allocation, allocate
from sdp_reconciler.planner.world import NodeView, ResolvedEnvironment, World
from sdp_reconciler.state import models
from sdp_reconciler.state.models import GatewaySpec, Lifecycle, PortAllocation, ServiceSpec
from sdp_reconciler.state.resolve import ResolvedGateway, ResolvedSandbox, ResolvedService
from sdp_reconciler.state.sources import Location

SERVICES = ("account", "payment", "user", "order", "notify")
INSTALLATION = "bench"
KEY = b"bench-plan-spec-hash-key"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
HEADS = {
    **{s: {"main": f"{i + 1:x}" * 40} for i, s in enumerate(SERVICES)},
    "erangel": {"develop": "e" * 40},
}
OCP = {s: f"https://{s}.ocp.company.invalid" for s in SERVICES}
COMMITTED_ROUTES = {HEADS["erangel"]["develop"]: OCP}
"""the gateway commit's own route values, as observing reads them (the services'
<SERVICE>_URL variables are built from them)"""


def nodes() -> tuple[models.Node, models.Node]:
    micro = models.Node(
        name="micro-1", type=models.NodeType.MICRO, agent_url="http://127.0.0.1:3453",
        address="10.0.0.1", public_address="10.0.0.1",
        ports=models.PortRange(first=10000, last=19999),
    )
    gateway = models.Node(
        name="gateway-1", type=models.NodeType.GATEWAY, agent_url="http://127.0.0.1:3454",
        address="10.0.0.2", public_address="10.0.0.2",
        ports=models.PortRange(first=30000, last=31999),
    )
    return micro, gateway


REPOSITORIES = {
    "micro-1": {s: RepositoryInfo(name=s, kind=RepositoryKind.GO, image="alpine:3.20",
                                  container_port=8080, health_path="/healthz")
                for s in SERVICES},
    "gateway-1": {"erangel": RepositoryInfo(
        name="erangel", kind=RepositoryKind.PHP, image="php:8.3-apache", container_port=80,
        health_path="/erangel/", url_prefix="/erangel",
        routes_file="application/config/production/config.php")},
}
ENVIRONMENT = ResolvedEnvironment(
    name="qa", variables={"DB_HOST": "qa-db.internal.invalid", "LOG_LEVEL": "debug"},
    secrets={"JWT_SECRET": Secret("jwt-bench-secret")},
)


def sandboxes(count: int) -> dict[str, ResolvedSandbox]:
    out = {}
    for index in range(count):
        name = f"SB-{index:05d}"
        file = f"state/sandboxes/{name}.yaml"
        services = {
            s: ResolvedService(name=s, spec=ServiceSpec(branch="main"), environment="qa",
                               resources=None, origin=Location(file, 6 + 2 * i, 5))
            for i, s in enumerate(SERVICES)
        }
        out[name] = ResolvedSandbox(
            name=name, file=file, location=Location(file, 1, 1), templates=(),
            gateway=ResolvedGateway(spec=GatewaySpec(branch="develop"), environment="qa",
                                    resources=None, origin=Location(file, 3, 3)),
            services=services, environment="qa", resources=None, lifecycle=Lifecycle(),
        )
    return out


def observation(node: models.Node, *, containers: list[ObservedContainer],
                networks: list[ObservedNetwork], gateways: list[ObservedGateway],
                last_applied: dict[str, dict[str, Any]]) -> NodeView:
    return NodeView(
        node=node,
        observation=Observation(
            node=NodeInfo(name=node.name, type=NodeType(node.type.value),
                          installation=INSTALLATION, version="bench"),
            containers=containers, networks=networks, gateways=gateways,
            last_applied=last_applied, operations_in_flight=[],
        ),
        repositories=dict(REPOSITORIES[node.name]),
    )


def world_new() -> World:
    micro, gateway = nodes()
    views = {n.name: observation(n, containers=[], networks=[], gateways=[], last_applied={})
             for n in (micro, gateway)}
    return World(installation=INSTALLATION, spec_key=KEY, nodes=views, heads=HEADS,
                 environments={"qa": ENVIRONMENT}, committed_routes=COMMITTED_ROUTES)


def world_in_sync(new_plan: Plan) -> World:
    """What the nodes report after carrying out ``new_plan`` successfully."""
    micro, gateway = nodes()
    found: dict[str, dict[str, list[Any]]] = {
        n.name: {"containers": [], "networks": [], "gateways": []} for n in (micro, gateway)}
    applied: dict[str, dict[str, dict[str, Any]]] = {micro.name: {}, gateway.name: {}}
    for change in new_plan.changes:
        step, node = change.step, change.node
        base = {LABEL_MANAGED: "true", LABEL_INSTANCE: INSTALLATION, LABEL_NODE: node}
        if isinstance(step, EnsureNetwork):
            found[node]["networks"].append(ObservedNetwork(
                name=step.network, id=f"n{len(found[node]['networks'])}",
                labels={**base, LABEL_SANDBOX: step.sandbox}))
        elif isinstance(step, DeployService | DeployGateway):
            spec = step.spec
            found[node]["containers"].append(ObservedContainer(
                name=spec.container, id=f"c{len(found[node]['containers'])}", labels={
                    **base, LABEL_SANDBOX: spec.sandbox, LABEL_SERVICE: spec.service,
                    LABEL_REPOSITORY: spec.repository, LABEL_BRANCH: spec.branch,
                    LABEL_COMMIT: spec.commit, LABEL_PORT: str(spec.port),
                    LABEL_SPEC: spec.spec_hash,
                    LABEL_KIND: "gateway" if spec.service == GATEWAY else "service"},
                state="running", status="Up 1 minute", image="bench"))
            applied[node][spec.container] = dict(spec.public_spec)
            if isinstance(step, DeployGateway):
                routes = {c.key: c.url or OCP[c.key] for c in change.routes}
                found[node]["gateways"].append(ObservedGateway(
                    container=spec.container, sandbox=spec.sandbox, commit=spec.commit,
                    live_routes={**OCP, **routes}, committed_routes=dict(OCP)))
    views = {n.name: observation(n, containers=found[n.name]["containers"],
                                 networks=found[n.name]["networks"],
                                 gateways=found[n.name]["gateways"],
                                 last_applied=applied[n.name]) for n in (micro, gateway)}
    return World(installation=INSTALLATION, spec_key=KEY, nodes=views, heads=HEADS,
                 environments={"qa": ENVIRONMENT}, committed_routes=COMMITTED_ROUTES)


class Case:
    """One size and world: the inputs of each function, prepared once."""

    def __init__(self, size: int, world_kind: str) -> None:
        self.size, self.world_kind = size, world_kind
        self.sandboxes = sandboxes(size)
        world = world_new()
        self.existing: list[PortAllocation] = []
        if world_kind == "in-sync":
            placements, _ = place(self.sandboxes, world)
            allocations, _ = allocate(sandboxes=self.sandboxes, placements=placements,
                                      existing=[], world=world, now=NOW)
            new_plan = plan(sandboxes=self.sandboxes, world=world, placements=placements,
                            allocations=allocations)
            world = world_in_sync(new_plan)
            self.existing = [PortAllocation(sandbox=a.sandbox, service=a.service, node=a.node,
                                            port=a.port, allocated_at=a.allocated_at)
                             for a in allocations]
        self.world = world
        self.placements, problems = place(self.sandboxes, world)
        self.allocations, port_problems = self.allocate()
        assert not problems and not port_problems, (problems, port_problems)
        result = self.plan()
        expected_changes = 0 if world_kind == "in-sync" else size * 7  # net, 5 services, gw
        assert not result.problems, result.problems[:3]
        assert len(result.changes) == expected_changes, (len(result.changes), expected_changes)

    def place(self) -> tuple[dict[tuple[str, str], Placement], Any]:
        return place(self.sandboxes, self.world)

    def allocate(self) -> tuple[list[Allocation], Any]:
        return allocate(sandboxes=self.sandboxes, placements=self.placements,
                        existing=self.existing, world=self.world, now=NOW)

    def plan(self) -> Plan:
        return plan(sandboxes=self.sandboxes, world=self.world, placements=self.placements,
                    allocations=self.allocations)


FUNCTIONS: dict[str, Callable[[Case], object]] = {
    "plan": Case.plan, "ports.allocate": Case.allocate, "placement.place": Case.place,
}


def timed(function: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of plan() at the largest size")
    args = parser.parse_args()
    worlds = ("new", "in-sync")
    say(f"building inputs for {args.sizes} sandboxes x {len(SERVICES)} services + gateway")
    cases = {(size, w): Case(size, w) for size in args.sizes for w in worlds}
    samples: dict[tuple[str, int, str], list[float]] = {}
    loads = [load_average()]
    for index in range(args.repeat):
        order = [(s, w) for s in args.sizes for w in worlds]
        if index % 2:
            order.reverse()
        for size, world in order:
            for name, function in FUNCTIONS.items():
                case = cases[(size, world)]
                samples.setdefault((name, size, world), []).append(
                    timed(lambda f=function, c=case: f(c)))  # type: ignore[misc]
        loads.append(load_average())
        say(f"repetition {index + 1}/{args.repeat} done, load {loads[-1]}")

    rows, figures = [], []
    smallest, largest = min(args.sizes), max(args.sizes)
    for name in FUNCTIONS:
        for world in worlds:
            medians = {s: statistics.median(samples[(name, s, world)]) for s in args.sizes}
            growth = ratio(medians[largest], medians[smallest])
            figures.append({
                "function": name, "world": world,
                "median_seconds": {str(s): round(m, 5) for s, m in medians.items()},
                "ms_per_sandbox": {str(s): round(m / s * 1000, 4) for s, m in medians.items()},
                f"growth_{largest}_over_{smallest}": growth,
                "samples": {str(s): [round(x, 5) for x in samples[(name, s, world)]]
                            for s in args.sizes},
            })
            rows.append([name, world, *[round(medians[s], 4) for s in args.sizes],
                         *[round(medians[s] / s * 1000, 3) for s in args.sizes], growth])
    headers = ["function", "world", *[f"{s} s" for s in args.sizes],
               *[f"ms/sbx@{s}" for s in args.sizes], f"{largest}/{smallest}"]
    profile_text = None
    if args.profile:
        for world in worlds:
            profiler = cProfile.Profile()
            profiler.enable()
            cases[(largest, world)].plan()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
            profile_text = (profile_text or "") + f"\n=== plan() {largest} {world} ===\n" \
                + out.getvalue()
    path = write_results("plan", {
        "services_per_sandbox": len(SERVICES), "gateway_per_sandbox": True,
        "repeat": args.repeat, "load_average": loads, "figures": figures,
        "profile": profile_text,
    })
    print(table(headers, rows))
    print(f"({len(SERVICES)} services + 1 gateway per sandbox; {largest}/{smallest} = 4 means "
          f"linear, 16 quadratic; load average {loads[0]} -> {loads[-1]}; results: {path})")
    if profile_text:
        print(profile_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
