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
from typing import Any, NamedTuple

from msgspec import Struct, field

from sdp_node.naming import GATEWAY
from sdp_node.protocol import ContainerSpec, EnvFileMount, RepositoryInfo, Secret
from sdp_reconciler.planner.dataplanning import DesiredDataSet, desired_data
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.routetable import Route, RouteKind, RouteTable
from sdp_reconciler.planner.specs import (
    SharedParts,
    SpecHasher,
    hashed_public_spec,
    hide,
    shared_parts,
)
from sdp_reconciler.planner.world import Allocation, ResolvedEnvironment, World
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import cpu_millicores, memory_bytes
from sdp_reconciler.state.resolved import ResolvedSandbox

Restart = tuple[str, str | None]
"""(sandbox, service) to recreate; service None: every container of the sandbox"""

_NO_ENVIRONMENT = ResolvedEnvironment(name="", variables={}, secrets={})


class SpecValues(NamedTuple):
    """A container's spec as the planner holds it: ``ContainerSpec``'s fields (the same names,
    the same values), as a plain immutable value. The wire model is made from it only for a
    change (``DesiredContainer.spec``): most containers of a pass are in sync and never send
    theirs, and a pydantic model per container would be most of a large pass's time."""

    sandbox: str
    service: str
    container: str
    repository: str
    branch: str
    commit: str
    port: int
    spec_hash: str
    public_spec: dict[str, Any]
    """shares its env, secrets and files dicts with other specs: read only"""
    env: dict[str, str]
    secret_env: dict[str, Secret]
    files: tuple[EnvFileMount, ...]
    cpu_millicores: int | None
    memory_bytes: int | None
    recreate: bool
    unported_json: bytes
    """the canonical JSON of the public spec with port 0 (a switch changes the port, not what
    failed)"""
    hasher: SpecHasher
    """the spec hash of a canonical JSON"""

    @property
    def failure_key(self) -> str:
        """What a remembered failure of this deploy is keyed by: hashed only when asked (for a
        change, or against a failure the node remembers)."""
        return self.hasher(self.unported_json)

    @property
    def attempt_key(self) -> str:
        return self.failure_key

    def to_wire(self) -> ContainerSpec:
        return ContainerSpec(
            sandbox=self.sandbox, service=self.service, container=self.container,
            repository=self.repository, branch=self.branch, commit=self.commit,
            port=self.port, spec_hash=self.spec_hash, public_spec=self.public_spec,
            env=self.env, secret_env=self.secret_env, files=list(self.files),
            cpu_millicores=self.cpu_millicores, memory_bytes=self.memory_bytes,
            recreate=self.recreate, failure_key=self.failure_key,
        )


# The desired values are NamedTuples, immutable and typed like frozen Structs and the cheapest
# to make: a pass makes one per container (6,000 for 1,000 sandboxes).


class DesiredService(NamedTuple):
    """A service container a node should run, and the network it joins."""

    sandbox: str
    service: str
    node: str
    values: SpecValues
    """its spec: what the plan compares with what runs"""
    origin: Location
    environment: str | None
    """the environment's name, for history and notices"""
    pinned: bool
    """the state pins a commit (so a new commit is "pinned commit changed")"""
    suspended: bool
    suspend_reason: str
    network: str
    explicit_port: bool
    """the state names its port: replaced in place on it, never switched to a spare one"""

    @property
    def spec(self) -> ContainerSpec:
        """Exactly what the agent receives (spec hash included), made when asked (for a
        change: once)."""
        return self.values.to_wire()


class DesiredGateway(NamedTuple):
    """A sandbox's gateway container, and where each of its keys goes."""

    sandbox: str
    service: str
    node: str
    values: SpecValues
    """its spec: what the plan compares with what runs"""
    origin: Location
    environment: str | None
    """the environment's name, for history and notices"""
    pinned: bool
    """the state pins a commit (so a new commit is "pinned commit changed")"""
    suspended: bool
    suspend_reason: str
    table: RouteTable
    """where each key of the sandbox goes (the same value the services' URL variables come
    from)"""

    @property
    def spec(self) -> ContainerSpec:
        """Exactly what the agent receives (spec hash included), made when asked (for a
        change: once)."""
        return self.values.to_wire()


DesiredContainer = DesiredService | DesiredGateway
"""a container a node should run: both kinds share their first eleven fields"""


class DesiredNetwork(NamedTuple):
    sandbox: str
    node: str
    name: str
    origin: Location
    suspended: bool


DesiredThing = DesiredService | DesiredGateway | DesiredNetwork


class DesiredState(Struct, frozen=True):
    things: dict[str, tuple[DesiredThing, ...]]
    """sandbox -> its networks, services and gateway, in that order; blocked sandboxes are
    absent"""
    data: DesiredDataSet
    """every sandbox's data services (``dataplanning.desired_data``)"""
    problems: tuple[Problem, ...]
    """every problem of the pass so far (those handed in and those found here)"""
    blocked: frozenset[str]


class _Builder(Struct, dict=True):  # __post_init__ adds the hasher
    world: World
    placements: dict[tuple[str, str], Placement]
    ports: dict[tuple[str, str], Allocation]
    restarts: frozenset[Restart]
    data: DesiredDataSet
    problems: list[Problem] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)

    # Per-pass caches: what many containers share is made once (an environment's digests,
    # a sandbox's variables on a node), so a pass stays cheap per container.
    _hidden: dict[int, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)
    """id of a ResolvedEnvironment -> its secrets' and files' digests (the World and
    ``_merged`` hold every environment used, so no id is reused while this builder lives)"""
    _merged: dict[tuple[str, str | None], ResolvedEnvironment | None] = field(
        default_factory=dict)
    """(sandbox, environment) -> the environment with the sandbox's data variables"""
    _variables: dict[tuple[str, str, str | None, bool],
                     tuple[dict[str, str], SharedParts]] = field(default_factory=dict)
    """(sandbox, node, environment, gateway) -> the variables of those containers and the
    shared parts of their specs"""
    _parts: dict[tuple[int, tuple[tuple[str, str], ...]], SharedParts] = field(
        default_factory=dict)
    """(id of an environment, its containers' variables) -> their specs' shared parts (most
    sandboxes of an environment have the same variables)"""
    _addresses: dict[tuple[str, str, str], tuple[str, str | None]] = field(
        default_factory=dict)
    """(node, repository, service) -> the node's address and the service's network URL"""

    def __post_init__(self) -> None:
        self._hasher = SpecHasher(self.world.spec_key)

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
        if name is not None and name in self.world.environment_errors:
            self.block(sandbox, Problem(location, f"{path}.environment",
                                        self.world.environment_errors[name]))
            return None
        key = (sandbox, name)
        if key in self._merged:
            return self._merged[key]
        found = _NO_ENVIRONMENT if name is None else self.world.environments.get(name)
        env, secret_env = self.data.env_of(sandbox)
        if found is not None and (env or secret_env):
            # The state's rules refuse a variable set by both; the data services' values win.
            found = ResolvedEnvironment(
                name=found.name, variables={**found.variables, **env},
                secrets={**found.secrets, **secret_env}, files=found.files,
            )
        self._merged[key] = found
        return found

    def shared(self, *, sandbox: str, node: str, environment_name: str | None,
               environment: ResolvedEnvironment, gateway: bool,
               table: RouteTable | None) -> tuple[dict[str, str], SharedParts]:
        """The variables of the sandbox's containers of one kind on ``node`` (the route
        table's URL variables, then the environment's, which win: someone wrote them on
        purpose), and the parts of their public specs that they share."""
        key = (sandbox, node, environment_name, gateway)
        found = self._variables.get(key)
        if found is not None:
            return found
        urls = table.variables(node, self.world.service_url_variable) \
            if table is not None and not gateway else {}
        variables = {**urls, **environment.variables}
        shared_key = (id(environment), tuple(variables.items()))
        parts = self._parts.get(shared_key)
        if parts is None:
            hidden = self._hidden.get(id(environment))
            if hidden is None:
                files = {f.path: f.content for f in environment.files}
                hidden = self._hidden[id(environment)] = hide(
                    self.world.spec_key, environment.secrets, files)
            parts = self._parts[shared_key] = shared_parts(
                self.world.spec_key, env=variables, secrets={}, files={}, hidden=hidden)
        self._variables[key] = found = (variables, parts)
        return found

    def container(self, sandbox: ResolvedSandbox, service: str, table: RouteTable | None = None,
                  network: str | None = None) -> DesiredService | DesiredGateway | None:
        """The service's (or, with ``service`` GATEWAY, the gateway's) value; a gateway's
        ``table`` is built here from its commit, a service's URL variables read from
        ``table``; ``network``: the sandbox's (made here when None)."""
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
        if gateway:
            network = None
        elif network is None:
            network = self.world.names.network(sandbox.name)
        variables, parts = self.shared(
            sandbox=sandbox.name, node=placement.node, environment_name=environment_name,
            environment=environment, gateway=gateway, table=table)
        # The container's spec, in the hot path of a pass (no helper call: one per container)
        cpu = cpu_millicores(resources.cpu) if resources and resources.cpu else None
        memory = memory_bytes(resources.memory) if resources and resources.memory else None
        port = allocation.port
        public, hashed, unported = hashed_public_spec(
            hasher=self._hasher, kind="gateway" if gateway else "service",
            repository=placement.repository, branch=branch, commit=commit, port=port,
            image=info.image, container_port=info.container_port, network=network,
            cpu_millicores=cpu, memory_bytes=memory, parts=parts,
        )
        restart = bool(self.restarts) and (
            (sandbox.name, service) in self.restarts or (sandbox.name, None) in self.restarts)
        spec = SpecValues(
            sandbox.name, service, self.world.names.container(sandbox.name, service),
            placement.repository, branch, commit, port, hashed, public, variables,
            environment.secrets, environment.files, cpu, memory, restart, unported,
            self._hasher,
        )
        suspended = sandbox.suspended
        reason = sandbox.suspend_reason if suspended else ""
        if network is not None:
            return DesiredService(
                sandbox=sandbox.name, service=service, node=placement.node, values=spec,
                origin=location, environment=environment_name, pinned=pinned is not None,
                suspended=suspended, suspend_reason=reason, network=network,
                explicit_port=explicit_port)
        return DesiredGateway(
            sandbox=sandbox.name, service=service, node=placement.node, values=spec,
            origin=location, environment=environment_name, pinned=pinned is not None,
            suspended=suspended, suspend_reason=reason,
            table=self.route_table(sandbox, commit))

    def route_table(self, sandbox: ResolvedSandbox, gateway_commit: str | None) -> RouteTable:
        """Where each key of the sandbox goes: the one value both the gateway's routes and the
        containers' ``<SERVICE>_URL`` variables are read from."""
        committed = self.world.committed_routes.get(gateway_commit) if gateway_commit else None
        routes: dict[str, Route] = {}
        for name, entry in sorted(sandbox.services.items()):
            # positional: a NamedTuple is made faster so (one per key of every sandbox)
            if entry.spec.target is not None:
                routes[name] = Route(name, RouteKind.TARGET, entry.spec.target, None, None,
                                     True, entry.origin)
            elif entry.spec.use_ocp:
                routes[name] = Route(name, RouteKind.OCP, (committed or {}).get(name), None,
                                     None, True, entry.origin)
            else:
                allocation = self.ports.get((sandbox.name, name))
                placement = self.placements.get((sandbox.name, name))
                if allocation is None or placement is None:
                    continue
                address, internal = self.addresses(placement, name)
                routes[name] = Route(name, RouteKind.SANDBOX,
                                     f"http://{address}:{allocation.port}", placement.node,
                                     internal, True, entry.origin)
        for key, value in sorted((committed or {}).items()):
            if key not in routes:
                routes[key] = Route(key, RouteKind.OCP, value, None, None, False)
        return RouteTable(tuple(routes[k] for k in sorted(routes)))

    def addresses(self, placement: Placement, name: str) -> tuple[str, str | None]:
        """The node's address, and the service's URL on its sandbox network (the alias
        runspec gives every service): the same for every sandbox, made once."""
        key = (placement.node, placement.repository, name)
        found = self._addresses.get(key)
        if found is None:
            info = self.repository_info(placement.node, placement.repository)
            found = self._addresses[key] = (
                self.world.nodes[placement.node].node.address,
                f"http://{name}:{info.container_port}" if info else None)
        return found

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
                or gateway.values.commit in self.world.committed_routes:
            return
        self.block(sandbox.name, Problem(
            gateway.origin, "gateway",
            f"the route values of {gateway.values.repository} at {gateway.values.commit[:7]} are "
            "unknown this pass, so the services' service URL variables cannot be built; "
            "the sandbox is left as is",
        ))


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
        network = world.names.network(name)
        for entry in sandbox.deployed_services():
            service = builder.container(sandbox, entry.name, table, network)
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
    "DesiredThing", "Restart", "SpecValues", "desire",
]
