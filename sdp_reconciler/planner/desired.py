"""What each node should run, one frozen value per thing, built once per pass.

``desire`` joins the resolved sandboxes (``state.resolved``) with where each part runs
(``placement``), its port (``ports``), the branch heads, resolved environments and gateway
route values (``World``) and the sandboxes' data services (``dataplanning``) into one value
per thing: a ``DesiredService`` (a service container and the network it joins), a
``DesiredGateway`` (the gateway container and the sandbox's ``RouteTable``), a
``DesiredNetwork``. The data services are ``DesiredData`` values (``dataplanning``), carried
beside them. Each value carries the container spec the agent receives and the
``file:line:col`` it comes from; the planner (``planning.plan``) compares these values with
what the nodes report and nothing else re-derives them.

A sandbox with a problem (unknown branch, unreachable node, unroutable key, unknown route
values, a problem found earlier in the pass) is still resolved to the end so that all of its
problems are reported at once, but it is ``blocked``: it gets no values, so nothing of it
changes this pass. A held sandbox (access.yaml) is blocked from the start. Pure, like the rest
of the planner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sdp_node.naming import GATEWAY
from sdp_node.protocol import ContainerSpec, RepositoryInfo
from sdp_reconciler.planner.dataplanning import DesiredDataSet, desired_data
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.routetable import Route, RouteKind, RouteTable
from sdp_reconciler.planner.specs import public_spec, spec_hash
from sdp_reconciler.planner.world import Allocation, ResolvedEnvironment, World
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import Resources, cpu_millicores, memory_bytes
from sdp_reconciler.state.resolved import ResolvedSandbox

Restart = tuple[str, str | None]
"""(sandbox, service) to recreate; service None: every container of the sandbox"""


@dataclass(frozen=True)
class DesiredContainer:
    """A container a node should run; what a service and a gateway have in common."""

    sandbox: str
    service: str
    node: str
    spec: ContainerSpec
    """exactly what the agent receives (spec hash included)"""
    origin: Location
    environment: str | None
    """the environment's name, for history and notices"""
    pinned: bool
    """the state pins a commit (so a new commit is "pinned commit changed")"""
    suspended: bool
    suspend_reason: str


@dataclass(frozen=True)
class DesiredService(DesiredContainer):
    network: str
    explicit_port: bool
    """the state names its port: replaced in place on it, never switched to a spare one"""


@dataclass(frozen=True)
class DesiredGateway(DesiredContainer):
    table: RouteTable
    """where each key of the sandbox goes (the same value the services' URL variables come
    from)"""


@dataclass(frozen=True)
class DesiredNetwork:
    sandbox: str
    node: str
    name: str
    origin: Location
    suspended: bool


DesiredThing = DesiredService | DesiredGateway | DesiredNetwork


@dataclass(frozen=True)
class DesiredState:
    things: dict[str, tuple[DesiredThing, ...]]
    """sandbox -> its networks, services and gateway, in that order; blocked sandboxes are
    absent"""
    data: DesiredDataSet
    """every sandbox's data services (``dataplanning.desired_data``)"""
    problems: tuple[Problem, ...]
    """every problem of the pass so far (those handed in and those found here)"""
    blocked: frozenset[str]


@dataclass
class _Builder:
    world: World
    placements: dict[tuple[str, str], Placement]
    ports: dict[tuple[str, str], Allocation]
    restarts: frozenset[Restart]
    data: DesiredDataSet
    problems: list[Problem] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)

    def block(self, sandbox: str, problem: Problem) -> None:
        self.problems.append(problem)
        self.blocked.add(sandbox)

    def repository_info(self, node: str, repository: str) -> RepositoryInfo | None:
        view = self.world.nodes.get(node)
        return view.repositories.get(repository) if view else None

    def commit_of(self, sandbox: str, repository: str, branch: str, pinned: str | None,
                  location: Location, path: str) -> str | None:
        if pinned is not None:
            return pinned
        if repository in self.world.head_errors:
            self.block(sandbox, Problem(location, path, self.world.head_errors[repository]))
            return None
        heads = self.world.heads.get(repository)
        if heads is None:
            self.block(sandbox, Problem(location, path,
                                        f"branch heads of {repository} are unknown this pass"))
            return None
        if branch not in heads:
            known = ", ".join(sorted(heads)[:10]) or "none"
            self.block(sandbox, Problem(
                location, f"{path}.branch",
                f"branch {branch!r} does not exist in repository {repository} "
                f"(branches: {known})",
            ))
            return None
        return heads[branch]

    def environment(self, sandbox: str, name: str | None, location: Location,
                    path: str) -> ResolvedEnvironment | None:
        found: ResolvedEnvironment | None
        if name is None:
            found = ResolvedEnvironment(name="", variables={}, secrets={})
        elif name in self.world.environment_errors:
            self.block(sandbox, Problem(location, f"{path}.environment",
                                        self.world.environment_errors[name]))
            return None
        else:
            found = self.world.environments.get(name)
        env, secret_env = self.data.env_of(sandbox)
        if found is None or not (env or secret_env):
            return found
        # The state's rules refuse a variable set by both; the data services' values win.
        return ResolvedEnvironment(
            name=found.name, variables={**found.variables, **env},
            secrets={**found.secrets, **secret_env}, files=found.files,
        )

    def container(self, sandbox: ResolvedSandbox, service: str,
                  table: RouteTable | None = None) -> DesiredService | DesiredGateway | None:
        """The service's (or, with ``service`` GATEWAY, the gateway's) value; a gateway's
        ``table`` is built here from its commit, a service's URL variables read from
        ``table``."""
        placement = self.placements.get((sandbox.name, service))
        allocation = self.ports.get((sandbox.name, service))
        if placement is None or allocation is None:
            return None
        gateway = service == GATEWAY
        explicit_port = False
        if gateway:
            assert sandbox.gateway is not None
            entry_spec = sandbox.gateway.spec
            branch, pinned = entry_spec.branch or "", entry_spec.commit
            environment_name, resources = sandbox.gateway.environment, sandbox.gateway.resources
            location, path = sandbox.gateway.origin, "gateway"
        else:
            entry = sandbox.services[service]
            branch, pinned = entry.spec.branch or "", entry.spec.commit
            environment_name, resources = entry.environment, entry.resources
            location, path = entry.origin, f"services.{service}"
            explicit_port = entry.spec.port is not None
        info = self.repository_info(placement.node, placement.repository)
        if info is None:
            self.block(sandbox.name, Problem(
                location, path, f"node {placement.node} did not report repository "
                f"{placement.repository} (is the node reachable?)"))
            return None
        commit = self.commit_of(sandbox.name, placement.repository, branch, pinned, location,
                                path)
        environment = self.environment(sandbox.name, environment_name, location, path)
        if commit is None or environment is None:
            return None
        if gateway:
            self.check_route_keys(sandbox, placement.repository, commit)
        network = None if gateway else self.world.names.network(sandbox.name)
        urls = table.variables(placement.node, self.world.service_url_variable) \
            if table is not None and not gateway else {}
        spec = self.container_spec(
            sandbox=sandbox.name, service=service, placement=placement, info=info,
            branch=branch, commit=commit, port=allocation.port, network=network,
            environment=environment, resources=resources, service_urls=urls,
        )
        common = dict(
            sandbox=sandbox.name, service=service, node=placement.node, spec=spec,
            origin=location, environment=environment_name, pinned=pinned is not None,
            suspended=sandbox.suspended, suspend_reason=sandbox.suspend_reason,
        )
        if network is not None:
            return DesiredService(**common, network=network,  # type: ignore[arg-type]
                                  explicit_port=explicit_port)
        return DesiredGateway(**common, table=self.route_table(sandbox, commit))  # type: ignore[arg-type]

    def route_table(self, sandbox: ResolvedSandbox, gateway_commit: str | None) -> RouteTable:
        """Where each key of the sandbox goes: the one value both the gateway's routes and the
        containers' ``<SERVICE>_URL`` variables are read from."""
        committed = self.world.committed_routes.get(gateway_commit) if gateway_commit else None
        routes: dict[str, Route] = {}
        for name, entry in sorted(sandbox.services.items()):
            if entry.spec.target is not None:
                routes[name] = Route(name, RouteKind.TARGET, entry.spec.target,
                                     origin=entry.origin)
            elif entry.spec.use_ocp:
                routes[name] = Route(name, RouteKind.OCP, (committed or {}).get(name),
                                     origin=entry.origin)
            else:
                allocation = self.ports.get((sandbox.name, name))
                placement = self.placements.get((sandbox.name, name))
                if allocation is None or placement is None:
                    continue
                address = self.world.nodes[placement.node].node.address
                info = self.repository_info(placement.node, placement.repository)
                # the service's alias on its sandbox network (runspec gives every service one)
                internal = f"http://{name}:{info.container_port}" if info else None
                routes[name] = Route(name, RouteKind.SANDBOX,
                                     f"http://{address}:{allocation.port}", placement.node,
                                     internal, origin=entry.origin)
        for key, value in sorted((committed or {}).items()):
            routes.setdefault(key, Route(key, RouteKind.OCP, value, declared=False))
        return RouteTable(tuple(routes[k] for k in sorted(routes)))

    def check_route_keys(self, sandbox: ResolvedSandbox, repository: str, commit: str) -> None:
        """Every service the sandbox routes must have a ``<key>_url`` in the gateway's commit."""
        committed = self.world.committed_routes.get(commit)
        if committed is None:
            return  # unknown this pass: the agent refuses an unknown key when it writes
        for name, entry in sorted(sandbox.services.items()):
            if entry.spec.use_ocp or name in committed:
                continue
            self.block(sandbox.name, Problem(
                entry.origin, f"services.{name}",
                f"the gateway's {repository} at {commit[:7]} has no '{name}_url' in its "
                "config: this service cannot be routed",
            ))

    def check_service_urls(self, sandbox: ResolvedSandbox,
                           gateway: DesiredGateway | None) -> None:
        """The services' variables need the OCP values of the gateway's commit: without them
        this pass, the sandbox is left as is rather than given variables that would change
        (and recreate every service) as soon as they are known."""
        if gateway is None or self.world.service_url_variable is None \
                or not sandbox.deployed_services() \
                or gateway.spec.commit in self.world.committed_routes:
            return
        self.block(sandbox.name, Problem(
            gateway.origin, "gateway",
            f"the route values of {gateway.spec.repository} at {gateway.spec.commit[:7]} are "
            "unknown this pass, so the services' service URL variables cannot be built; "
            "the sandbox is left as is",
        ))

    def container_spec(
        self, *, sandbox: str, service: str, placement: Placement, info: RepositoryInfo,
        branch: str, commit: str, port: int, network: str | None,
        environment: ResolvedEnvironment, resources: Resources | None,
        service_urls: dict[str, str] | None = None,
    ) -> ContainerSpec:
        key = self.world.spec_key
        # The environment's own variable of the same name wins: someone wrote it on purpose.
        variables = {**(service_urls or {}), **environment.variables}
        cpu = cpu_millicores(resources.cpu) if resources and resources.cpu else None
        memory = memory_bytes(resources.memory) if resources and resources.memory else None
        files = {f.path: f.content for f in environment.files}
        public = public_spec(
            key=key, kind="gateway" if service == GATEWAY else "service",
            repository=placement.repository, branch=branch, commit=commit, port=port,
            image=info.image, container_port=info.container_port, network=network,
            env=variables, secrets=environment.secrets, files=files,
            cpu_millicores=cpu, memory_bytes=memory,
        )
        restart = (sandbox, service) in self.restarts or (sandbox, None) in self.restarts
        failure_key = spec_hash(key, {**public, "port": 0})
        return ContainerSpec(
            sandbox=sandbox, service=service,
            container=self.world.names.container(sandbox, service),
            repository=placement.repository, branch=branch, commit=commit, port=port,
            spec_hash=spec_hash(key, public), public_spec=public,
            env=variables, secret_env=dict(environment.secrets),
            files=list(environment.files), cpu_millicores=cpu, memory_bytes=memory,
            recreate=restart, failure_key=failure_key,
        )


def desire(
    *,
    sandboxes: dict[str, ResolvedSandbox],
    world: World,
    placements: dict[tuple[str, str], Placement],
    allocations: Iterable[Allocation],
    problems: Iterable[Problem] = (),
    restarts: frozenset[Restart] = frozenset(),
    held: frozenset[str] = frozenset(),
    data: DesiredDataSet | None = None,
) -> DesiredState:
    """One value per thing each node should run, for every sandbox without a problem.

    ``data`` is ``desired_data(sandboxes, world)`` (built here when not given); ``held``
    sandboxes are blocked whatever they say."""
    data = desired_data(sandboxes, world) if data is None else data
    builder = _Builder(world=world, placements=placements,
                       ports={(a.sandbox, a.service): a for a in allocations},
                       restarts=restarts, data=data)
    builder.blocked |= held
    for problem in [*problems, *data.problems]:
        builder.problems.append(problem)
        builder.blocked |= _sandboxes_of_problem(problem, sandboxes)
    nodes_of_sandbox: dict[str, set[str]] = {}
    for (sandbox_name, _service), placement in placements.items():
        nodes_of_sandbox.setdefault(sandbox_name, set()).add(placement.node)

    things: dict[str, tuple[DesiredThing, ...]] = {}
    for name, sandbox in sorted(sandboxes.items()):
        # A blocked sandbox is still resolved, so that all of its problems are reported at
        # once; only its values are dropped.
        for node in sorted(nodes_of_sandbox.get(name, ())):
            if not world.nodes[node].reachable:
                builder.block(name, Problem(sandbox.location, "sandbox",
                                            f"node {node} is unreachable; sandbox left as is"))
        # The gateway first: its commit carries the OCP values of the route table, which the
        # services' <SERVICE>_URL variables are built from.
        gateway = builder.container(sandbox, GATEWAY) if sandbox.gateway else None
        assert gateway is None or isinstance(gateway, DesiredGateway)
        table = gateway.table if gateway is not None else builder.route_table(sandbox, None)
        builder.check_service_urls(sandbox, gateway)
        services: list[DesiredService] = []
        for entry in sandbox.deployed_services():
            service = builder.container(sandbox, entry.name, table)
            if service is not None:
                assert isinstance(service, DesiredService)
                services.append(service)
        if name in builder.blocked:
            continue
        networks: dict[tuple[str, str], DesiredNetwork] = {}
        for service in services:
            networks.setdefault((service.node, service.network), DesiredNetwork(
                sandbox=name, node=service.node, name=service.network,
                origin=sandbox.location, suspended=sandbox.suspended))
        things[name] = (*networks.values(), *services, *([gateway] if gateway else []))
    return DesiredState(things=things, data=data, problems=tuple(builder.problems),
                        blocked=frozenset(builder.blocked))


def _sandboxes_of_problem(problem: Problem,
                          sandboxes: dict[str, ResolvedSandbox]) -> set[str]:
    """Every sandbox the problem's file feeds: its own file, or a template entry it uses."""
    affected = set()
    for name, sandbox in sandboxes.items():
        origins = {sandbox.file, *(s.origin.file for s in sandbox.services.values()),
                   *(d.origin.file for d in sandbox.data.values())}
        if sandbox.gateway is not None:
            origins.add(sandbox.gateway.origin.file)
        if problem.location.file in origins:
            affected.add(name)
    return affected


__all__ = [
    "DesiredContainer", "DesiredGateway", "DesiredNetwork", "DesiredService", "DesiredState",
    "DesiredThing", "Restart", "desire",
]
