"""Terse inputs for the pure planner tests: sandboxes, nodes, worlds and a pass of the planner.

Everything is built directly (no state directory, no agent): resolved sandboxes with their
``file:line:col`` origins, nodes of one installation, and worlds observed from
``InMemoryNodes``. ``plan_pass`` runs the pure part of a reconcile pass exactly as
``reconcile.prepare`` chains it: ``place`` → ``allocate`` → ``plan``; ``reconcile_once`` adds
the apply and the ports.yaml write of ``reconcile.run``. ``converged`` gives nodes that already
run a state; ``desired_spec`` the exact container spec (and spec hash) the planner wants, for
worlds built by hand; ``against`` compares a plan with expected rows.

Fixed facts of every test world:

* installation ``t1``, spec-hash key ``KEY``;
* MICRO node ``micro-1`` (address 10.0.0.1, ports 9001-9010) serving the Go repositories
  ``account``, ``payment`` and ``user``; GATEWAY node ``gateway-1`` (address 10.0.0.2, public
  ``gw.example.test``, ports 8080-8089) serving the PHP repository ``erangel``;
* branch heads ``HEADS`` (``sha("a1b2c3d")`` is that prefix padded to 40 hex digits);
* every ``erangel`` commit carries ``OCP`` as its ``<key>_url`` values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime

from msgspec import Struct, field
from msgspec.structs import replace

from sdp_node.naming import DEFAULT_NAMES
from sdp_node.protocol import (
    ContainerSpec,
    DeployGateway,
    DeployService,
    DrainContainer,
    RepositoryInfo,
    RepositoryKind,
    Secret,
)
from sdp_reconciler.apply.applying import ApplyOutcome
from sdp_reconciler.planner.placement import Placement, place
from sdp_reconciler.planner.plan import Action, Plan, Subject
from sdp_reconciler.planner.planning import Restart, plan
from sdp_reconciler.planner.ports import Allocation, allocate, release
from sdp_reconciler.planner.world import ResolvedEnvironment, World
from sdp_reconciler.state.models import (
    GatewaySpec,
    Lifecycle,
    Node,
    NodeType,
    PortAllocation,
    PortRange,
    Resources,
    ServiceSpec,
)
from sdp_reconciler.state.resolve import ResolvedGateway, ResolvedSandbox, ResolvedService
from sdp_reconciler.state.sources import Location
from tests.planning.fakes import InMemoryNodes

KEY = b"planning-tests-spec-hash-key"
INSTALLATION = "t1"
MICRO = "micro-1"
GATEWAY_NODE = "gateway-1"
MICRO_ADDRESS = "10.0.0.1"
GATEWAY_ADDRESS = "10.0.0.2"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def sha(prefix: str) -> str:
    """A full commit SHA starting with ``prefix`` (so reasons show ``prefix[:7]``)."""
    return (prefix + "0" * 40)[:40]


HEADS: dict[str, dict[str, str]] = {
    "account": {"main": sha("a1b2c3d"), "feature/login-error": sha("c0ffee1")},
    "payment": {"main": sha("b0b0b0b")},
    "user": {"main": sha("d00d00d")},
    "erangel": {"develop": sha("9a7e4a7"), "release": sha("7e1ea5e")},
}
OCP = {
    "account": "https://account.ocp.company.invalid",
    "payment": "https://payment.ocp.company.invalid",
    "user": "https://user.ocp.company.invalid",
    "ledger": "https://ledger.ocp.company.invalid",
}
GO_IMAGE = "alpine:3.20"
PHP_IMAGE = "php:8.3-apache"


# -- state ----------------------------------------------------------------------------------------


def sandbox_file(name: str) -> str:
    return f"state/sandboxes/{name}.yaml"


def service_location(sandbox: str, service: str, services: Iterable[str] = ()) -> Location:
    """Where ``sandbox``'s entry for ``service`` is written: line 6, 8, ... in name order."""
    names = sorted({*services, service})
    return Location(sandbox_file(sandbox), 6 + 2 * names.index(service), 5)


def gateway_location(sandbox: str) -> Location:
    return Location(sandbox_file(sandbox), 3, 3)


def branch(name: str, **extra: object) -> ServiceSpec:
    return ServiceSpec.model_validate({"branch": name, **extra})


def ocp() -> ServiceSpec:
    return ServiceSpec(use_ocp=True)


def target(url: str) -> ServiceSpec:
    return ServiceSpec(target=url)


DEVELOP = GatewaySpec(branch="develop")


def sandbox(
    name: str, services: Mapping[str, ServiceSpec] | None = None, *,
    gateway: GatewaySpec | None = DEVELOP, environment: str | None = None,
    suspended: bool = False, resources: Resources | None = None,
    service_environments: Mapping[str, str] | None = None,
) -> ResolvedSandbox:
    """A resolved sandbox written in ``state/sandboxes/{name}.yaml`` (no template)."""
    services = dict(services or {})
    file = sandbox_file(name)
    resolved = {
        service: ResolvedService(
            name=service, spec=spec,
            environment=(service_environments or {}).get(service) or spec.environment
            or environment,
            resources=spec.resources or resources,
            origin=service_location(name, service, services),
        )
        for service, spec in sorted(services.items())
    }
    return ResolvedSandbox(
        name=name, file=file, location=Location(file, 1, 1), templates=(),
        gateway=None if gateway is None else ResolvedGateway(
            spec=gateway, environment=gateway.environment or environment,
            resources=gateway.resources or resources, origin=gateway_location(name)),
        services=resolved, environment=environment, resources=resources,
        lifecycle=Lifecycle(suspended=suspended),
    )


def by_name(*sandboxes: ResolvedSandbox) -> dict[str, ResolvedSandbox]:
    return {s.name: s for s in sandboxes}


def environment(name: str, variables: Mapping[str, str] | None = None,
                secrets: Mapping[str, str] | None = None) -> ResolvedEnvironment:
    return ResolvedEnvironment(
        name=name, variables=dict(variables or {}),
        secrets={k: Secret(v) for k, v in (secrets or {}).items()},
    )


# -- nodes ----------------------------------------------------------------------------------------


def node(name: str, node_type: NodeType, address: str, ports: tuple[int, int],
         public_address: str | None = None) -> Node:
    return Node(
        name=name, type=node_type, agent_url="http://127.0.0.1:3453",
        address=address, public_address=public_address or address,
        ports=PortRange(first=ports[0], last=ports[1]),
    )


def go_repository(name: str) -> RepositoryInfo:
    return RepositoryInfo(name=name, kind=RepositoryKind.GO, image=GO_IMAGE,
                          container_port=8080, health_path="/health")


def php_repository(name: str = "erangel") -> RepositoryInfo:
    return RepositoryInfo(name=name, kind=RepositoryKind.PHP, image=PHP_IMAGE,
                          container_port=80, health_path="/erangel/", url_prefix="/erangel/",
                          routes_file="application/config/production/config.php")


def nodes(
    *, micro_ports: tuple[int, int] = (9001, 9010),
    micro_repositories: Iterable[str] = ("account", "payment", "user"),
    extra: Mapping[Node, Iterable[RepositoryInfo]] | None = None,
    committed_routes_at: Mapping[str, Mapping[str, str]] | None = None,
) -> InMemoryNodes:
    """The standard installation, with nothing running yet."""
    micro = node(MICRO, NodeType.MICRO, MICRO_ADDRESS, micro_ports)
    gateway = node(GATEWAY_NODE, NodeType.GATEWAY, GATEWAY_ADDRESS, (8080, 8089),
                   public_address="gw.example.test")
    repositories: dict[str, list[RepositoryInfo]] = {
        MICRO: [go_repository(r) for r in micro_repositories],
        GATEWAY_NODE: [php_repository()],
    }
    for extra_node, infos in (extra or {}).items():
        repositories[extra_node.name] = list(infos)
    return InMemoryNodes(
        installation=INSTALLATION, nodes=[micro, gateway, *(extra or {})],
        repositories=repositories, committed_routes={"erangel": OCP},
        committed_routes_at=committed_routes_at,
    )


# -- a pass ---------------------------------------------------------------------------------------


class Desired(Struct, frozen=True):
    """What the state says, plus what the reconciler resolved this pass."""

    sandboxes: dict[str, ResolvedSandbox]
    heads: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: HEADS)
    environments: Mapping[str, ResolvedEnvironment] = field(default_factory=dict)
    head_errors: Mapping[str, str] = field(default_factory=dict)
    environment_errors: Mapping[str, str] = field(default_factory=dict)
    restarts: frozenset[Restart] = frozenset()
    ports_file: tuple[PortAllocation, ...] = ()

    def world(self, observed: InMemoryNodes) -> World:
        return observed.world(
            spec_key=KEY, heads=self.heads, environments=self.environments,
            head_errors=self.head_errors, environment_errors=self.environment_errors,
        )


class Pass(Struct, frozen=True):
    world: World
    placements: dict[tuple[str, str], Placement]
    allocations: list[Allocation]
    plan: Plan


def plan_pass(desired: Desired, observed: InMemoryNodes) -> Pass:
    """place → allocate → plan, as ``reconcile.prepare`` chains them."""
    world = desired.world(observed)
    placements, problems = place(desired.sandboxes, world, desired.ports_file)
    allocations, port_problems = allocate(
        sandboxes=desired.sandboxes, placements=placements, existing=desired.ports_file,
        world=world, now=NOW,
    )
    result = plan(
        sandboxes=desired.sandboxes, world=world, placements=placements,
        allocations=allocations, problems=[*problems, *port_problems],
        restarts=desired.restarts,
    )
    return Pass(world, placements, allocations, result)


def as_ports_file(allocations: Iterable[Allocation]) -> tuple[PortAllocation, ...]:
    """What ``write_ports_file`` would have written, as the loader would read it back."""
    return tuple(
        PortAllocation(sandbox=a.sandbox, service=a.service, node=a.node, port=a.port,
                       allocated_at=a.allocated_at)
        for a in allocations
    )


def reconcile_once(
    desired: Desired, observed: InMemoryNodes, *, failing: Collection[str] = (),
) -> tuple[Pass, ApplyOutcome, Desired]:
    """One pass as ``reconcile.run`` does it: plan, apply, release the ports of confirmed
    removals. Returns the pass, its outcome and ``desired`` with the ports.yaml it wrote."""
    result = plan_pass(desired, observed)
    outcome = observed.apply(result.plan, failing=failing)
    removed = {
        (c.sandbox, c.service) for c in result.plan.changes
        if c.action is Action.REMOVE and c.service and outcome.ok(c)
        and not isinstance(c.step, DrainContainer)  # a move: its allocation is on its new node
    }
    written = as_ports_file(release(result.allocations, removed))
    return result, outcome, replace(desired, ports_file=written)


def converged(desired: Desired, observed: InMemoryNodes | None = None) -> InMemoryNodes:
    """``observed`` (default: a fresh installation) after one successful pass for ``desired``."""
    observed = observed or nodes()
    observed.apply(plan_pass(desired, observed).plan)
    return observed


def desired_spec(desired: Desired, sandbox: str, service: str) -> ContainerSpec:
    """The container spec (with its spec hash) the planner wants for (sandbox, service).

    Read from the deploy step of a plan made against a fresh installation, so it is exactly what
    a node that already runs the sandbox as desired would report in its labels.
    """
    result = plan_pass(desired, nodes()).plan
    name = DEFAULT_NAMES.container(sandbox, service)
    for change in result.changes:
        step = change.step
        if isinstance(step, DeployService | DeployGateway) and step.spec.container == name:
            return step.spec
    raise AssertionError(f"the plan deploys no {name}: {result.render()}")


# -- expectations ---------------------------------------------------------------------------------


Row = tuple[Action, Subject, str, str]
"""(action, subject, resource, a substring of the reason)"""


def rows(result: Plan) -> list[tuple[Action, Subject, str, str]]:
    """The plan as (action, subject, resource, full reason), in plan order."""
    return [(c.action, c.subject, c.resource, c.reason) for c in result.changes]


def against(result: Plan, expected: Iterable[Row]) -> list[Row]:
    """The plan's rows, each reason cut down to the expected substring where it contains it.

    ``assert against(plan, expected) == expected`` then fails with a readable diff that shows
    the full reason of every row that does not match.
    """
    wanted = list(expected)
    out: list[Row] = []
    for index, (action, subject, resource, reason) in enumerate(rows(result)):
        if index < len(wanted) and wanted[index][3] in reason:
            reason = wanted[index][3]
        out.append((action, subject, resource, reason))
    return out
