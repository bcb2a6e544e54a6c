"""``plan(desired, observed) -> Plan``: the pure centre of SDP.

Given the resolved sandboxes, where each part runs, its ports and what the nodes reported, it
lists the changes that make the nodes match the state, each with its reason. It opens no socket,
file or subprocess (a test walks its imports to keep it so), and the same inputs give the same
plan, in the same order. Nothing unchanged produces a change: a second pass after a successful
one plans nothing.

Decisions, per sandbox:

* a deployed service or gateway is created when missing, updated when its spec hash differs
  (the reason names the moved branch or the changed fields), started when stopped (resumed or
  stopped by hand), stopped when the sandbox is suspended, recreated on ``restart``;
* a gateway's route table is written in place when only routes differ (a hand edit is undone
  and said so); a route to a sandbox service waits for that service's deploy and falls back to
  the previous route (or the OCP value) if the deploy fails;
* what this installation runs but the state no longer wants is removed, after the routes moved
  away from it; a sandbox with a problem (unknown branch, unreachable node, ...) is left alone;
* a running service whose spec changed is **switched**: its new container gets a spare port of
  the node's range (the lowest free one), the routes move to that port once it is healthy, and
  a ``retire`` in the cleanup phase (after the deploy and the sandbox's routes succeeded)
  drains and removes the previous one; its allocation then follows it (``ports``). A service
  with an explicit ``port:`` is replaced in place on that port. A previous instance left by an
  interrupted switch is retired before the service is switched again;
* a deploy the node remembers as failed (build, crash on start, health) for the same spec is not
  planned again until the branch moves, the spec changes or ``restart`` asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sdp_node.naming import GATEWAY
from sdp_node.protocol import (
    ASIDE_SUFFIX,
    LABEL_BRANCH,
    LABEL_COMMIT,
    LABEL_KIND,
    LABEL_PORT,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    LABEL_SPEC,
    ContainerSpec,
    DeployGateway,
    DeployService,
    EnsureNetwork,
    ObservedContainer,
    ObservedFailure,
    ObservedGateway,
    RemoveContainer,
    RemoveNetwork,
    RepositoryInfo,
    RetireContainer,
    SetRoutes,
    StartContainer,
    StopContainer,
)
from sdp_reconciler.planner.dataplanning import DesiredDataSet, Reset, desired_data, plan_data
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.plan import (
    PHASE_ORDER,
    Action,
    Change,
    ChangeDetail,
    DetailKind,
    Phase,
    Plan,
    RouteChoice,
    Subject,
)
from sdp_reconciler.planner.routetable import Route, RouteTable
from sdp_reconciler.planner.specs import differences, public_spec, spec_hash
from sdp_reconciler.planner.world import Allocation, ResolvedEnvironment, World
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import Resources, cpu_millicores, memory_bytes
from sdp_reconciler.state.resolved import ResolvedSandbox

Restart = tuple[str, str | None]
"""(sandbox, service) to recreate; service None: every container of the sandbox"""

def _order(change: Change) -> int:
    """Within one node's batch: networks, stops, deploys and starts, routes, removals."""
    if change.action is Action.REMOVE:
        return 5 if change.subject is Subject.NETWORK else 4
    if change.subject is Subject.NETWORK:
        return 0
    if change.action is Action.STOP:
        return 1
    return 3 if change.subject is Subject.ROUTES else 2


@dataclass
class _Draft:
    """A container the state wants, before it is compared with what runs."""

    sandbox: ResolvedSandbox
    service: str
    placement: Placement
    spec: ContainerSpec
    network: str | None
    location: Location
    environment: str | None = None


@dataclass
class _Planner:
    sandboxes: dict[str, ResolvedSandbox]
    world: World
    placements: dict[tuple[str, str], Placement]
    ports: dict[tuple[str, str], Allocation]
    restarts: frozenset[Restart]
    data: DesiredDataSet = field(default_factory=DesiredDataSet)
    retired: dict[str, str] = field(default_factory=dict)
    only: frozenset[str] | None = None
    """a scoped pass: what runs for any other sandbox (or for none) is never touched"""
    problems: list[Problem] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    deploy_steps: dict[tuple[str, str], str] = field(default_factory=dict)
    planned_networks: set[tuple[str, str]] = field(default_factory=set)
    switch_ports: dict[tuple[str, str], int] = field(default_factory=dict)
    """(sandbox, service) -> the spare port its new container gets this pass"""
    retires: list[Change] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Indexes of what the nodes reported, built once: the plan stays linear in its size.
        self._containers: dict[tuple[str, str], ObservedContainer] = {}
        self._gateways: dict[tuple[str, str], ObservedGateway] = {}
        self._by_sandbox: dict[str, list[ObservedContainer]] = {}
        self._networks: set[tuple[str, str]] = set()
        self._previous: dict[tuple[str, str], ObservedContainer] = {}
        self._failures: dict[tuple[str, str], ObservedFailure] = {}
        self._used_ports: dict[str, set[int]] = {}
        for allocation in self.ports.values():
            self._used_ports.setdefault(allocation.node, set()).add(allocation.port)
        for node, view in sorted(self.world.nodes.items()):
            if view.observation is None:
                continue
            for failure in view.observation.failures:
                self._failures[(node, failure.container)] = failure
            for container in view.observation.containers:
                port = container.labels.get(LABEL_PORT, "")
                if port.isdigit():
                    self._used_ports.setdefault(node, set()).add(int(port))
                if container.name.endswith(ASIDE_SUFFIX) and container.state == "running":
                    self._previous[(node, container.name.removesuffix(ASIDE_SUFFIX))] = \
                        container
                if container.aside:
                    continue
                self._containers[(node, container.name)] = container
                sandbox = container.labels.get(LABEL_SANDBOX)
                if sandbox is not None:
                    self._by_sandbox.setdefault(sandbox, []).append(container)
            for gateway in view.observation.gateways:
                self._gateways[(node, gateway.container)] = gateway
            self._networks |= {(node, n.name) for n in view.observation.networks}
        self._known: set[str] | None = None
        self.nodes_of_sandbox: dict[str, set[str]] = {}
        for (sandbox, _service), placement in self.placements.items():
            self.nodes_of_sandbox.setdefault(sandbox, set()).add(placement.node)

    # -- observed ---------------------------------------------------------------------------------

    def observed(self, node: str, name: str) -> ObservedContainer | None:
        return self._containers.get((node, name))

    def observed_gateway(self, node: str, name: str) -> ObservedGateway | None:
        return self._gateways.get((node, name))

    def failure(self, node: str, container: str) -> ObservedFailure | None:
        return self._failures.get((node, container))

    def spare_port(self, node: str) -> int | None:
        """The lowest port of the node's range that no allocation, container or earlier spare
        of this pass holds."""
        used = self._used_ports.setdefault(node, set())
        span = self.world.nodes[node].node.port_range()
        for port in range(span.first, span.last + 1):
            if port not in used:
                used.add(port)
                return port
        return None

    def retire(self, draft: _Draft, after: tuple[str, ...], reason: str) -> None:
        """Plan the removal of the previous instance of a switched container."""
        node, container = draft.placement.node, draft.spec.container
        self.retires.append(Change(
            action=Action.REMOVE, subject=Subject.SERVICE, phase=Phase.CLEANUP,
            sandbox=draft.sandbox.name, service=draft.service, node=node,
            resource=container + ASIDE_SUFFIX, reason=reason,
            step=RetireContainer(step_id=f"cleanup:{node}:{container}{ASIDE_SUFFIX}",
                                 container=container),
            location=draft.location, after=after,
        ))

    def network_exists(self, node: str, network: str) -> bool:
        return (node, network) in self._networks

    def last_applied(self, node: str, name: str) -> dict[str, object] | None:
        view = self.world.nodes.get(node)
        if view is None or view.observation is None:
            return None
        return view.observation.last_applied.get(name)

    def repository_info(self, node: str, repository: str) -> RepositoryInfo | None:
        view = self.world.nodes.get(node)
        return view.repositories.get(repository) if view else None

    # -- desired --------------------------------------------------------------------------------

    def block(self, sandbox: str, problem: Problem) -> None:
        self.problems.append(problem)
        self.blocked.add(sandbox)

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

    def draft(self, sandbox: ResolvedSandbox, service: str,
              table: RouteTable | None = None) -> _Draft | None:
        placement = self.placements.get((sandbox.name, service))
        allocation = self.ports.get((sandbox.name, service))
        if placement is None or allocation is None:
            return None
        if service == GATEWAY:
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
        if service == GATEWAY:
            self.check_route_keys(sandbox, placement.repository, commit)
        network = self.world.names.network(sandbox.name) if service != GATEWAY else None
        urls = table.variables(placement.node, self.world.service_url_variable) \
            if table is not None and service != GATEWAY else {}
        spec = self.container_spec(
            sandbox=sandbox.name, service=service, placement=placement, info=info,
            branch=branch, commit=commit, port=allocation.port, network=network,
            environment=environment, resources=resources, service_urls=urls,
        )
        return _Draft(sandbox, service, placement, spec, network, location, environment_name)

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

    def check_service_urls(self, sandbox: ResolvedSandbox, gateway: _Draft | None) -> None:
        """The services' variables need the OCP values of the gateway's commit: without them
        this pass, the sandbox is left as is rather than given variables that would change
        (and recreate every service) as soon as they are known."""
        if gateway is None or self.world.service_url_variable is None \
                or not sandbox.deployed_services() \
                or gateway.spec.commit in self.world.committed_routes:
            return
        self.block(sandbox.name, Problem(
            gateway.location, "gateway",
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

    # -- comparing --------------------------------------------------------------------------------

    def compare(self, draft: _Draft) -> Change | None:
        """The change that makes the node run ``draft``, or None when it already does."""
        spec, node = draft.spec, draft.placement.node
        gateway = draft.service == GATEWAY
        subject = Subject.GATEWAY if gateway else Subject.SERVICE
        phase = Phase.ROUTES if gateway else Phase.SERVICES
        current = self.observed(node, spec.container)
        detail = ChangeDetail(
            DetailKind.DEPLOY, repository=spec.repository, branch=spec.branch,
            commit=spec.commit, port=spec.port,
            previous_commit=current.labels.get(LABEL_COMMIT) if current else None,
            environment=draft.environment,
        )
        suspended = draft.sandbox.suspended
        step_id = f"{phase.value}:{node}:{spec.container}"

        def change(action: Action, reason: str, step: object) -> Change:
            return Change(
                action=action, subject=subject, phase=phase, sandbox=draft.sandbox.name,
                service=draft.service, node=node, resource=spec.container, reason=reason,
                step=step,  # type: ignore[arg-type]
                location=draft.location, detail=detail,
            )

        if suspended:
            if current is not None and current.state in ("running", "restarting"):
                return change(Action.STOP, draft.sandbox.suspend_reason,
                              StopContainer(step_id=step_id, container=spec.container))
            return None
        deploy: DeployService | DeployGateway
        if gateway:
            deploy = DeployGateway(step_id=step_id, spec=spec, routes={})
        else:
            assert draft.network is not None
            deploy = DeployService(step_id=step_id, spec=spec, network=draft.network)
        failure = self.failure(node, spec.container)
        if failure is not None and failure.spec_hash == spec.attempt_key and not spec.recreate \
                and (current is None or current.labels.get(LABEL_SPEC) != spec.spec_hash):
            return None  # remembered as failed: reported by status, not tried again
        if current is None:
            reason = self.missing_reason(draft, node)
            return change(Action.CREATE, reason, deploy)
        if not gateway and (node, spec.container) in self._previous:
            self.retire(draft, (), "an interrupted switch left the previous instance: it goes "
                        "once the routes point at the new one")
            return None
        if spec.recreate:
            return self.switched(draft, change(Action.RECREATE, "restart requested", deploy),
                                 current)
        if current.labels.get(LABEL_SPEC) != spec.spec_hash:
            return self.switched(
                draft, change(Action.UPDATE, self.update_reason(draft, node, current), deploy),
                current)
        if current.state not in ("running", "restarting"):
            siblings = self.sandbox_containers(draft.sandbox.name)
            everything_stopped = all(c.state not in ("running", "restarting") for c in siblings)
            reason = "sandbox resumed" if everything_stopped and len(siblings) > 1 else \
                f"drift: container {current.state} (stopped by hand?)"
            return change(Action.START, reason,
                          StartContainer(step_id=step_id, container=spec.container))
        return None

    def switched(self, draft: _Draft, planned: Change, current: ObservedContainer) -> Change:
        """A running service's deploy moved to a spare port, and the retire of its previous
        instance; unchanged for a gateway, a stopped container or an explicit port."""
        entry = draft.sandbox.services.get(draft.service)
        if entry is None or entry.spec.port is not None or current.state != "running" \
                or not isinstance(planned.step, DeployService):
            return planned
        node = draft.placement.node
        port = self.spare_port(node)
        if port is None:
            return planned  # the range is full: replaced in place
        from dataclasses import replace

        spec = planned.step.spec
        public = {**spec.public_spec, "port": port}
        moved = spec.model_copy(update={
            "port": port, "public_spec": public,
            "spec_hash": spec_hash(self.world.spec_key, public),
        })
        self.switch_ports[(draft.sandbox.name, draft.service)] = port
        self.retire(draft, (planned.step_id,), f"switched to port {port}: the previous "
                    f"instance (port {current.labels.get(LABEL_PORT)}) drains and goes once the "
                    "routes moved")
        return replace(planned, step=planned.step.model_copy(update={"spec": moved}),
                       detail=replace(planned.detail, port=port))

    def sandbox_containers(self, sandbox: str) -> list[ObservedContainer]:
        return self._by_sandbox.get(sandbox, [])

    def missing_reason(self, draft: _Draft, node: str) -> str:
        if self.last_applied(node, draft.spec.container) is not None:
            return "drift: container missing (removed by hand?)"
        if not self.sandbox_containers(draft.sandbox.name):
            return "new sandbox"
        return "new in the sandbox"

    @staticmethod
    def pinned_commit(draft: _Draft) -> str | None:
        if draft.service == GATEWAY:
            return draft.sandbox.gateway.spec.commit if draft.sandbox.gateway else None
        return draft.sandbox.services[draft.service].spec.commit

    def update_reason(self, draft: _Draft, node: str, current: ObservedContainer) -> str:
        spec = draft.spec
        old_branch = current.labels.get(LABEL_BRANCH)
        old_commit = current.labels.get(LABEL_COMMIT, "")
        parts = []
        pinned = self.pinned_commit(draft)
        if old_branch and old_branch != spec.branch:
            parts.append(f"branch changed {old_branch}→{spec.branch}")
        elif old_commit != spec.commit:
            what = "pinned commit changed" if pinned else "branch moved"
            parts.append(f"{what} {old_commit[:7]}→{spec.commit[:7]}")
        fields = differences(self.last_applied(node, spec.container), spec.public_spec)
        if parts and fields == ["previous spec unknown"]:
            fields = []
        if fields:
            parts.append("spec changed: " + ", ".join(fields))
        return "; ".join(parts) or "spec changed"

    # -- routes -----------------------------------------------------------------------------------

    def route_table(self, sandbox: ResolvedSandbox, gateway_commit: str | None) -> RouteTable:
        """Where each key of the sandbox goes: the one value both the gateway's routes and the
        containers' ``<SERVICE>_URL`` variables are read from."""
        committed = self.world.committed_routes.get(gateway_commit) if gateway_commit else None
        routes: dict[str, Route] = {}
        for name, entry in sorted(sandbox.services.items()):
            if entry.spec.target is not None:
                routes[name] = Route(name, "target", entry.spec.target)
            elif entry.spec.use_ocp:
                routes[name] = Route(name, "ocp", (committed or {}).get(name))
            else:
                allocation = self.ports.get((sandbox.name, name))
                placement = self.placements.get((sandbox.name, name))
                if allocation is None or placement is None:
                    continue
                address = self.world.nodes[placement.node].node.address
                info = self.repository_info(placement.node, placement.repository)
                # the service's alias on its sandbox network (runspec gives every service one)
                internal = f"http://{name}:{info.container_port}" if info else None
                routes[name] = Route(name, "sandbox", f"http://{address}:{allocation.port}",
                                     placement.node, internal)
        for key, value in sorted((committed or {}).items()):
            routes.setdefault(key, Route(key, "ocp", value, declared=False))
        return RouteTable(tuple(routes[k] for k in sorted(routes)))

    def route_choices(self, sandbox: ResolvedSandbox, table: RouteTable,
                      live: dict[str, str] | None) -> list[RouteChoice]:
        choices = []
        for route in table.routes:
            if not route.declared:
                continue
            if route.kind == "target":
                choices.append(RouteChoice(route.key, route.url, "target"))
            elif route.kind == "ocp":
                choices.append(RouteChoice(route.key, None, "ocp"))
            else:
                url = route.url
                port = self.switch_ports.get((sandbox.name, route.key))
                if port is not None and route.node is not None:
                    # the new container of a switch answers on a spare port
                    url = f"http://{self.world.nodes[route.node].node.address}:{port}"
                depends = self.deploy_steps.get((sandbox.name, route.key))
                fallback = (live or {}).get(route.key) if live is not None else None
                choices.append(RouteChoice(route.key, url, "sandbox", depends, fallback))
        return choices

    def plan_routes(self, draft: _Draft, table: RouteTable,
                    gateway_change: Change | None) -> list[Change]:
        """The gateway's change (carrying its routes) and/or an in-place route change."""
        sandbox, node, container = draft.sandbox, draft.placement.node, draft.spec.container
        observed = self.observed_gateway(node, container)
        live = observed.live_routes if observed and observed.problem is None else None
        choices = self.route_choices(sandbox, table, live)
        if gateway_change is not None and gateway_change.action in (
            Action.CREATE, Action.UPDATE, Action.RECREATE
        ):
            return [_with_routes(gateway_change, tuple(choices))]
        changes = [gateway_change] if gateway_change is not None else []
        routes = self.route_update(draft, observed, choices)
        return changes + ([routes] if routes is not None else [])

    def route_update(self, draft: _Draft, observed: ObservedGateway | None,
                     choices: list[RouteChoice]) -> Change | None:
        sandbox, node, container = draft.sandbox, draft.placement.node, draft.spec.container
        if sandbox.suspended or observed is None:
            return None
        if observed.problem is not None:
            self.problems.append(Problem(draft.location, "gateway", observed.problem))
            return None
        committed = observed.committed_routes
        wanted: dict[str, str] = {}
        for choice in choices:
            if choice.key not in committed:
                self.problems.append(Problem(
                    sandbox.services[choice.key].origin, f"services.{choice.key}",
                    f"the gateway's {draft.spec.repository} at {observed.commit[:7]} has no "
                    f"'{choice.key}_url' in its config: this service cannot be routed",
                ))
                continue
            wanted[choice.key] = choice.url or committed[choice.key]
        differing = {k: v for k, v in wanted.items() if observed.live_routes.get(k) != v}
        reverted = {
            k: committed[k] for k, v in observed.live_routes.items()
            if k in committed and k not in wanted and v != committed[k]
        }
        if not differing and not reverted:
            return None
        reason = _routes_reason(observed, differing, reverted, self._known_urls())
        routes = {**wanted, **reverted}
        step = SetRoutes(step_id=f"routes:{node}:{container}", sandbox=sandbox.name,
                         container=container, routes=routes)
        return Change(
            action=Action.UPDATE, subject=Subject.ROUTES, phase=Phase.ROUTES,
            sandbox=sandbox.name, service=GATEWAY, node=node, resource=container,
            reason=reason, step=step, location=draft.location,
            routes=tuple(c for c in choices if c.key in differing) + tuple(
                RouteChoice(k, None, "ocp") for k in sorted(reverted)),
        )

    def _known_urls(self) -> set[str]:
        """URLs SDP itself may have written: every allocation's and every running service's."""
        if self._known is not None:
            return self._known
        urls = set()
        for allocation in self.ports.values():
            view = self.world.nodes.get(allocation.node)
            if view is not None:
                urls.add(f"http://{view.node.address}:{allocation.port}")
        for view in self.world.nodes.values():
            for container in view.observation.containers if view.observation else []:
                port = container.labels.get(LABEL_PORT)
                if port and container.labels.get(LABEL_KIND) == "service":
                    urls.add(f"http://{view.node.address}:{port}")
        self._known = urls
        for resolved in self.sandboxes.values():
            urls |= {s.spec.target for s in resolved.services.values() if s.spec.target}
        return urls

    # -- removals ---------------------------------------------------------------------------------

    def removals(self, wanted: set[tuple[str, str]], wanted_networks: set[tuple[str, str]]) -> None:
        for node, view in sorted(self.world.nodes.items()):
            if view.observation is None:
                continue
            for container in view.observation.containers:
                if container.aside or (node, container.name) in wanted:
                    continue
                sandbox = container.labels.get(LABEL_SANDBOX, "")
                if sandbox in self.blocked or not self.in_scope(sandbox):
                    continue
                service = container.labels.get(LABEL_SERVICE)
                reason = self.removal_reason(sandbox, service, node)
                kind = Subject.GATEWAY if container.labels.get(LABEL_KIND) == "gateway" \
                    else Subject.SERVICE
                self.changes.append(Change(
                    action=Action.REMOVE, subject=kind, phase=Phase.CLEANUP, sandbox=sandbox,
                    service=service, node=node, resource=container.name, reason=reason,
                    step=RemoveContainer(step_id=f"cleanup:{node}:{container.name}",
                                         container=container.name),
                    detail=ChangeDetail(DetailKind.REMOVAL,
                                        previous_commit=container.labels.get(LABEL_COMMIT)),
                ))
            for network in view.observation.networks:
                sandbox = network.labels.get(LABEL_SANDBOX, "")
                if (node, network.name) in wanted_networks or sandbox in self.blocked \
                        or not self.in_scope(sandbox):
                    continue
                self.changes.append(Change(
                    action=Action.REMOVE, subject=Subject.NETWORK, phase=Phase.CLEANUP,
                    sandbox=sandbox, service=None, node=node, resource=network.name,
                    reason="sandbox deleted" if sandbox not in self.sandboxes
                    else "no service of the sandbox runs on this node any more",
                    step=RemoveNetwork(step_id=f"cleanup:{node}:{network.name}",
                                       network=network.name),
                ))

    def in_scope(self, sandbox: str) -> bool:
        return self.only is None or sandbox in self.only

    def removal_reason(self, sandbox: str, service: str | None, node: str) -> str:
        if sandbox in self.retired:
            return self.retired[sandbox]
        if sandbox not in self.sandboxes:
            return "sandbox deleted" if sandbox else "orphan owned by this installation"
        resolved = self.sandboxes[sandbox]
        if service == GATEWAY:
            return "gateway moved to another node"
        entry = resolved.services.get(service or "")
        if entry is None:
            return "service removed from the sandbox"
        if not entry.spec.deployed:
            now = "target " + (entry.spec.target or "") if entry.spec.target else "OCP"
            return f"service no longer deployed in the sandbox (routed to {now})"
        placed = self.placements.get((sandbox, service or ""))
        if placed is not None and placed.node != node:
            return f"service moved to node {placed.node}"
        return "orphan owned by this installation"


def _replace(change: Change, **values: tuple[str, ...]) -> Change:
    from dataclasses import replace

    return replace(change, **values)  # type: ignore[arg-type]


def _with_routes(change: Change, routes: tuple[RouteChoice, ...]) -> Change:
    from dataclasses import replace

    return replace(change, routes=routes)


def _routes_reason(observed: ObservedGateway, differing: dict[str, str],
                   reverted: dict[str, str], known: set[str]) -> str:
    live = observed.live_routes
    committed = observed.committed_routes
    hand = sorted(
        k for k in {*differing, *reverted}
        if live.get(k) not in known and live.get(k) != committed.get(k)
    )
    parts = [f"{k}_url {_label(live.get(k), committed.get(k))}→{_label(v, committed.get(k))}"
             + (f" ({v})" if k in hand and v == committed.get(k) else "")
             for k, v in sorted({**differing, **reverted}.items()) if k in differing or
             k in reverted]
    prefix = f"drift: config.php routes edited by hand ({', '.join(hand)}); " if hand else ""
    return prefix + "routes changed: " + ", ".join(parts)


def _label(url: str | None, committed: str | None) -> str:
    """``OCP`` for the key's own committed value; any other value as it is (a hand edit may
    copy another key's OCP URL, which is not this key's OCP)."""
    if url is None:
        return "none"
    return "OCP" if url == committed else url


def plan(
    *,
    sandboxes: dict[str, ResolvedSandbox],
    world: World,
    placements: dict[tuple[str, str], Placement],
    allocations: Iterable[Allocation],
    problems: Iterable[Problem] = (),
    restarts: frozenset[Restart] = frozenset(),
    retired: dict[str, str] | None = None,
    held: frozenset[str] = frozenset(),
    data: DesiredDataSet | None = None,
    resets: frozenset[Reset] = frozenset(),
    only: frozenset[str] | None = None,
) -> Plan:
    """The changes that bring the nodes to the state. Pure and deterministic.

    ``retired`` names sandboxes whose files exist but whose containers must go (expiry), with
    the reason; they are not in ``sandboxes``. ``held`` names sandboxes to leave exactly as
    they run (an unauthorised change, docs/access.md): nothing of theirs is created, changed or
    removed (their data services neither); they are not in ``sandboxes`` either. ``data`` is
    ``desired_data(sandboxes, world)`` (built here when not given); ``resets`` are (sandbox,
    entry) to re-clone. ``only`` (a scoped pass) limits removals to those sandboxes: the
    containers, networks and data of any other are left as they are.
    """
    data = desired_data(sandboxes, world) if data is None else data
    planner = _Planner(
        sandboxes=sandboxes, world=world, placements=placements,
        ports={(a.sandbox, a.service): a for a in allocations}, restarts=restarts,
        data=data, retired=dict(retired or {}), only=only,
    )
    planner.blocked |= held
    for problem in [*problems, *data.problems]:
        planner.problems.append(problem)
        planner.blocked |= _sandboxes_of_problem(problem, sandboxes)
    notes = [f"node {name} is unreachable: {view.unreachable}"
             for name, view in sorted(world.nodes.items()) if view.unreachable]

    drafts: dict[str, list[_Draft]] = {}
    tables: dict[str, RouteTable] = {}
    for name, sandbox in sorted(sandboxes.items()):
        # A blocked sandbox is still drafted, so that all of its problems are reported at
        # once; only its changes are dropped.
        for node in sorted(planner.nodes_of_sandbox.get(name, ())):
            if not world.nodes[node].reachable:
                planner.block(name, Problem(sandbox.location, "sandbox",
                                            f"node {node} is unreachable; sandbox left as is"))
        # The gateway first: its commit carries the OCP values of the route table, which the
        # services' <SERVICE>_URL variables are built from.
        gateway = planner.draft(sandbox, GATEWAY) if sandbox.gateway else None
        tables[name] = planner.route_table(sandbox, gateway.spec.commit if gateway else None)
        planner.check_service_urls(sandbox, gateway)
        ready = [d for d in (planner.draft(sandbox, s.name, tables[name])
                             for s in sandbox.deployed_services()) if d is not None]
        if name not in planner.blocked:
            drafts[name] = ready + ([gateway] if gateway else [])

    wanted: set[tuple[str, str]] = set()
    wanted_networks: set[tuple[str, str]] = set()
    for name, sandbox_drafts in drafts.items():
        if name in planner.blocked:
            continue
        for draft in sandbox_drafts:
            wanted.add((draft.placement.node, draft.spec.container))
            if draft.network is None:
                continue
            wanted_networks.add((draft.placement.node, draft.network))
            key = (draft.placement.node, draft.network)
            if not planner.network_exists(*key) and not draft.sandbox.suspended \
                    and key not in planner.planned_networks:
                planner.planned_networks.add(key)
                step = EnsureNetwork(step_id=f"services:{draft.placement.node}:{draft.network}",
                                     sandbox=name, network=draft.network)
                change = Change(
                    action=Action.CREATE, subject=Subject.NETWORK, phase=Phase.SERVICES,
                    sandbox=name, service=None, node=draft.placement.node,
                    resource=draft.network, reason="the sandbox's services need it",
                    step=step, location=draft.sandbox.location,
                )
                planner.changes.append(change)
        for draft in sandbox_drafts:
            if draft.service == GATEWAY:
                continue
            compared = planner.compare(draft)
            if compared is not None:
                planner.changes.append(compared)
                if compared.action is not Action.STOP:
                    planner.deploy_steps[(name, draft.service)] = compared.step_id
        for draft in sandbox_drafts:
            if draft.service != GATEWAY:
                continue
            planner.changes += planner.plan_routes(draft, tables[name], planner.compare(draft))

    planner.removals(wanted, wanted_networks)
    for retire in planner.retires:
        routes = tuple(c.step_id for c in planner.changes if c.sandbox == retire.sandbox
                       and c.phase is Phase.ROUTES)
        planner.changes.append(_replace(retire, after=retire.after + routes))
    data_plan = plan_data(data=data, world=world, sandboxes=sandboxes, blocked=planner.blocked,
                          retired=planner.retired, resets=resets)
    planner.problems += data_plan.problems
    planner.blocked |= data_plan.blocked
    planner.changes = [c for c in planner.changes if c.sandbox not in data_plan.blocked]
    planner.changes += [c for c in data_plan.changes if planner.in_scope(c.sandbox)]
    notes += data_plan.notes
    ordered = sorted(
        planner.changes,
        key=lambda c: (_phase_index(c.phase), c.node, _order(c), c.resource),
    )
    return Plan(
        changes=tuple(ordered), problems=tuple(sorted(set(planner.problems))),
        notes=tuple(notes), blocked=frozenset(planner.blocked), held=held,
    )


def _phase_index(phase: Phase) -> int:
    return PHASE_ORDER.index(phase)


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


__all__ = ["Restart", "plan"]
