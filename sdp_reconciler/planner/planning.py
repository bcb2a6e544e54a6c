"""``plan(desired, observed) -> Plan``: the pure centre of SDP.

Given what each node should run (``desired.desire``'s values, built once per pass from the
resolved sandboxes, where each part runs and its ports) and what the nodes reported, it lists
the changes that make the nodes match the state, each with its reason. It opens no socket,
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
from typing import assert_never

from msgspec import Struct, field
from msgspec.structs import replace

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
    DeployGateway,
    DeployService,
    EnsureNetwork,
    ObservedContainer,
    ObservedFailure,
    ObservedGateway,
    RemoveContainer,
    RemoveNetwork,
    RetireContainer,
    SetRoutes,
    StartContainer,
    StopContainer,
)
from sdp_reconciler.planner import moves
from sdp_reconciler.planner.dataplanning import DesiredDataSet, Reset, plan_data
from sdp_reconciler.planner.desired import (
    DesiredContainer,
    DesiredGateway,
    DesiredNetwork,
    DesiredService,
    DesiredState,
    Restart,
    desire,
)
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
from sdp_reconciler.planner.routetable import RouteKind
from sdp_reconciler.planner.specs import differences, spec_hash
from sdp_reconciler.planner.world import Allocation, World
from sdp_reconciler.state.locations import Problem
from sdp_reconciler.state.resolved import ResolvedSandbox

_Choice = tuple[str, str | None, RouteKind, str | None, str | None]
"""a ``RouteChoice``'s fields: key, url, kind, depends_on, fallback"""


def _order(change: Change) -> int:
    """Within one node's batch: networks, stops, deploys and starts, routes, removals."""
    if change.action is Action.REMOVE:
        return 5 if change.subject is Subject.NETWORK else 4
    if change.subject is Subject.NETWORK:
        return 0
    if change.action is Action.STOP:
        return 1
    return 3 if change.subject is Subject.ROUTES else 2


class _Planner(Struct, dict=True):  # __post_init__ adds the indexes
    sandboxes: dict[str, ResolvedSandbox]
    world: World
    placements: dict[tuple[str, str], Placement]
    ports: dict[tuple[str, str], Allocation]
    retired: dict[str, str] = field(default_factory=dict)
    only: frozenset[str] | None = None
    """a scoped pass: what runs for any other sandbox (or for none) is never touched"""
    problems: list[Problem] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    deploy_steps: dict[tuple[str, str], str] = field(default_factory=dict)
    switch_ports: dict[tuple[str, str], int] = field(default_factory=dict)
    """(sandbox, service) -> the spare port its new container gets this pass"""
    retires: list[Change] = field(default_factory=list)
    move_notes: list[str] = field(default_factory=list)
    """moves across nodes left for a later pass (planner/moves.py)"""
    moves_kept: set[tuple[str, str]] = field(default_factory=set)
    """(node, sandbox): a container there keeps serving a service that moved, so its network
    stays"""
    running_index: moves.Running | None = None

    def __post_init__(self) -> None:
        # Indexes of what the nodes reported, built once: the plan stays linear in its size.
        # Those only a change needs (ports in use, a sandbox's containers) are built on first
        # use: a pass where most containers are in sync never builds them.
        self._containers: dict[tuple[str, str], ObservedContainer] = {}
        self._gateways: dict[tuple[str, str], ObservedGateway] = {}
        self._networks: set[tuple[str, str]] = set()
        self._previous: dict[tuple[str, str], ObservedContainer] = {}
        self._failures: dict[tuple[str, str], ObservedFailure] = {}
        self._by_sandbox_index: dict[str, list[ObservedContainer]] | None = None
        self._used_ports_index: dict[str, set[int]] | None = None
        for node, view in sorted(self.world.nodes.items()):
            if view.observation is None:
                continue
            for failure in view.observation.failures:
                self._failures[(node, failure.container)] = failure
            containers = view.observation.containers
            self._containers.update({(node, c.name): c for c in containers if not c.aside})
            self._previous.update({
                (node, c.name.removesuffix(ASIDE_SUFFIX)): c for c in containers
                if c.name.endswith(ASIDE_SUFFIX) and c.state == "running"})
            for gateway in view.observation.gateways:
                self._gateways[(node, gateway.container)] = gateway
            self._networks |= {(node, n.name) for n in view.observation.networks}
        self._known: set[str] | None = None

    @property
    def _by_sandbox(self) -> dict[str, list[ObservedContainer]]:
        if self._by_sandbox_index is None:
            self._by_sandbox_index = {}
            for (_node, _name), container in self._containers.items():
                sandbox = container.labels.get(LABEL_SANDBOX)
                if sandbox is not None:
                    self._by_sandbox_index.setdefault(sandbox, []).append(container)
        return self._by_sandbox_index

    @property
    def _used_ports(self) -> dict[str, set[int]]:
        if self._used_ports_index is None:
            used: dict[str, set[int]] = {}
            for allocation in self.ports.values():
                used.setdefault(allocation.node, set()).add(allocation.port)
            for node, view in sorted(self.world.nodes.items()):
                for container in view.observation.containers if view.observation else []:
                    port = container.labels.get(LABEL_PORT, "")
                    if port.isdigit():
                        used.setdefault(node, set()).add(int(port))
            self._used_ports_index = used
        return self._used_ports_index

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

    def retire(self, draft: DesiredService, after: tuple[str, ...], reason: str) -> None:
        """Plan the removal of the previous instance of a switched container."""
        node, container = draft.node, draft.values.container
        self.retires.append(Change(
            action=Action.REMOVE, subject=Subject.SERVICE, phase=Phase.CLEANUP,
            sandbox=draft.sandbox, service=draft.service, node=node,
            resource=container + ASIDE_SUFFIX, reason=reason,
            step=RetireContainer(step_id=f"cleanup:{node}:{container}{ASIDE_SUFFIX}",
                                 container=container),
            location=draft.origin, after=after,
        ))

    def network_exists(self, node: str, network: str) -> bool:
        return (node, network) in self._networks

    def last_applied(self, node: str, name: str) -> dict[str, object] | None:
        view = self.world.nodes.get(node)
        if view is None or view.observation is None:
            return None
        return view.observation.last_applied.get(name)

    # -- comparing --------------------------------------------------------------------------------

    def compare(self, draft: DesiredService | DesiredGateway) -> Change | None:
        """The change that makes the node run ``draft``, or None when it already does."""
        spec, node = draft.values, draft.node
        current = self._containers.get((node, spec.container))
        if current is not None and not draft.suspended and not spec.recreate \
                and current.state == "running" \
                and current.labels.get(LABEL_SPEC) == spec.spec_hash \
                and (node, spec.container) not in self._previous:
            return None  # the common case, decided without building anything
        match draft:
            case DesiredService():
                subject, phase = Subject.SERVICE, Phase.SERVICES
            case DesiredGateway():
                subject, phase = Subject.GATEWAY, Phase.ROUTES
            case _:
                assert_never(draft)
        step_id = f"{phase.value}:{node}:{spec.container}"

        def deploy() -> DeployService | DeployGateway:
            match draft:
                case DesiredService():
                    return DeployService(step_id=step_id, spec=draft.spec,
                                         network=draft.network)
                case DesiredGateway():
                    return DeployGateway(step_id=step_id, spec=draft.spec, routes={})
                case _:
                    assert_never(draft)

        def change(action: Action, reason: str, step: object) -> Change:
            detail = ChangeDetail(
                DetailKind.DEPLOY, repository=spec.repository, branch=spec.branch,
                commit=spec.commit, port=spec.port,
                previous_commit=current.labels.get(LABEL_COMMIT) if current else None,
                environment=draft.environment,
            )
            return Change(
                action=action, subject=subject, phase=phase, sandbox=draft.sandbox,
                service=draft.service, node=node, resource=spec.container, reason=reason,
                step=step,  # type: ignore[arg-type]
                location=draft.origin, detail=detail,
            )

        if draft.suspended:
            if current is not None and current.state in ("running", "restarting"):
                return change(Action.STOP, draft.suspend_reason,
                              StopContainer(step_id=step_id, container=spec.container))
            return None
        failure = self.failure(node, spec.container)
        if failure is not None and failure.spec_hash == spec.attempt_key and not spec.recreate \
                and (current is None or current.labels.get(LABEL_SPEC) != spec.spec_hash):
            return None  # remembered as failed: reported by status, not tried again
        if current is None:
            reason = self.missing_reason(draft, node)
            return change(Action.CREATE, reason, deploy())
        if isinstance(draft, DesiredService) and (node, spec.container) in self._previous:
            self.retire(draft, (), "an interrupted switch left the previous instance: it goes "
                        "once the routes point at the new one")
            return None
        if spec.recreate:
            return self.switched(draft, change(Action.RECREATE, "restart requested", deploy()),
                                 current)
        if current.labels.get(LABEL_SPEC) != spec.spec_hash:
            return self.switched(
                draft, change(Action.UPDATE, self.update_reason(draft, node, current), deploy()),
                current)
        if current.state not in ("running", "restarting"):
            siblings = self.sandbox_containers(draft.sandbox)
            everything_stopped = all(c.state not in ("running", "restarting") for c in siblings)
            reason = "sandbox resumed" if everything_stopped and len(siblings) > 1 else \
                f"drift: container {current.state} (stopped by hand?)"
            return change(Action.START, reason,
                          StartContainer(step_id=step_id, container=spec.container))
        return None

    def switched(self, draft: DesiredService | DesiredGateway, planned: Change,
                 current: ObservedContainer) -> Change:
        """A running service's deploy moved to a spare port, and the retire of its previous
        instance; unchanged for a gateway, a stopped container or an explicit port."""
        if not isinstance(draft, DesiredService) or draft.explicit_port \
                or current.state != "running" or not isinstance(planned.step, DeployService):
            return planned
        node = draft.node
        port = self.spare_port(node)
        if port is None:
            return planned  # the range is full: replaced in place
        spec = planned.step.spec
        public = {**spec.public_spec, "port": port}
        moved = spec.model_copy(update={
            "port": port, "public_spec": public,
            "spec_hash": spec_hash(self.world.spec_key, public),
        })
        self.switch_ports[(draft.sandbox, draft.service)] = port
        self.retire(draft, (planned.step_id,), f"switched to port {port}: the previous "
                    f"instance (port {current.labels.get(LABEL_PORT)}) drains and goes once the "
                    "routes moved")
        return replace(planned, step=planned.step.model_copy(update={"spec": moved}),
                       detail=replace(planned.detail, port=port))

    def sandbox_containers(self, sandbox: str) -> list[ObservedContainer]:
        return self._by_sandbox.get(sandbox, [])

    def missing_reason(self, draft: DesiredContainer, node: str) -> str:
        placement = self.placements.get((draft.sandbox, draft.service))
        moved = moves.moved_reason(self.world, self.running(), placement, draft.values.container) \
            if isinstance(draft, DesiredService) and placement is not None else None
        if moved is not None:
            return moved
        if self.last_applied(node, draft.values.container) is not None:
            return "drift: container missing (removed by hand?)"
        if not self.sandbox_containers(draft.sandbox):
            return "new sandbox"
        return "new in the sandbox"

    def update_reason(self, draft: DesiredContainer, node: str,
                      current: ObservedContainer) -> str:
        spec = draft.values
        old_branch = current.labels.get(LABEL_BRANCH)
        old_commit = current.labels.get(LABEL_COMMIT, "")
        parts = []
        pinned = draft.pinned
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

    def route_choices(self, gateway: DesiredGateway,
                      live: dict[str, str] | None) -> list[_Choice]:
        """The routes of the sandbox's table, each waiting for its service's deploy of this
        pass (if any, on the switch's spare port) and falling back to the route the gateway
        serves now: ``RouteChoice``'s fields, made into one only for a change."""
        choices: list[_Choice] = []
        for route in gateway.table.routes:
            if not route.declared:
                continue
            match route.kind:
                case RouteKind.TARGET:
                    choices.append((route.key, route.url, RouteKind.TARGET, None, None))
                case RouteKind.OCP:
                    choices.append((route.key, None, RouteKind.OCP, None, None))
                case RouteKind.SANDBOX:
                    url = route.url
                    port = self.switch_ports.get((gateway.sandbox, route.key))
                    if port is not None and route.node is not None:
                        # the new container of a switch answers on a spare port
                        url = f"http://{self.world.nodes[route.node].node.address}:{port}"
                    depends = self.deploy_steps.get((gateway.sandbox, route.key))
                    held = self.holdover(gateway.sandbox, route.key) if depends is None \
                        else None
                    if held is not None:
                        url = held.url  # a move not made yet: the old node keeps serving
                    fallback = (live or {}).get(route.key) if live is not None else None
                    choices.append((route.key, url, RouteKind.SANDBOX, depends, fallback))
                case _:
                    assert_never(route.kind)
        return choices

    def plan_routes(self, draft: DesiredGateway, gateway_change: Change | None) -> list[Change]:
        """The gateway's change (carrying its routes) and/or an in-place route change."""
        node, container = draft.node, draft.values.container
        observed = self.observed_gateway(node, container)
        live = observed.live_routes if observed and observed.problem is None else None
        choices = self.route_choices(draft, live)
        if gateway_change is not None and gateway_change.action in (
            Action.CREATE, Action.UPDATE, Action.RECREATE
        ):
            return [_with_routes(gateway_change, tuple(RouteChoice(*c) for c in choices))]
        changes = [gateway_change] if gateway_change is not None else []
        routes = self.route_update(draft, observed, choices)
        return changes + ([routes] if routes is not None else [])

    def route_update(self, draft: DesiredGateway, observed: ObservedGateway | None,
                     choices: list[_Choice]) -> Change | None:
        sandbox, node, container = draft.sandbox, draft.node, draft.values.container
        if draft.suspended or observed is None:
            return None
        if observed.problem is not None:
            self.problems.append(Problem(draft.origin, "gateway", observed.problem))
            return None
        committed = observed.committed_routes
        wanted: dict[str, str] = {}
        for key, url, *_rest in choices:
            if key not in committed:
                route = draft.table.get(key)
                assert route is not None and route.origin is not None  # a declared key
                self.problems.append(Problem(
                    route.origin, f"services.{key}",
                    f"the gateway's {draft.values.repository} at {observed.commit[:7]} has no "
                    f"'{key}_url' in its config: this service cannot be routed",
                ))
                continue
            wanted[key] = url or committed[key]
        live = observed.live_routes
        differing = {k: v for k, v in wanted.items() if live.get(k) != v}
        reverted = {
            k: committed[k] for k, v in live.items()
            if k in committed and k not in wanted and v != committed[k]
        }
        if not differing and not reverted:
            return None
        reason = _routes_reason(observed, differing, reverted, self._known_urls())
        routes = {**wanted, **reverted}
        step = SetRoutes(step_id=f"routes:{node}:{container}", sandbox=sandbox,
                         container=container, routes=routes)
        return Change(
            action=Action.UPDATE, subject=Subject.ROUTES, phase=Phase.ROUTES,
            sandbox=sandbox, service=GATEWAY, node=node, resource=container,
            reason=reason, step=step, location=draft.origin,
            routes=tuple(RouteChoice(*c) for c in choices if c[0] in differing) + tuple(
                RouteChoice(k, None, RouteKind.OCP) for k in sorted(reverted)),
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
                if self.move_away(container, node):
                    continue
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
                        or not self.in_scope(sandbox) or (node, sandbox) in self.moves_kept:
                    continue
                self.changes.append(Change(
                    action=Action.REMOVE, subject=Subject.NETWORK, phase=Phase.CLEANUP,
                    sandbox=sandbox, service=None, node=node, resource=network.name,
                    reason="sandbox deleted" if sandbox not in self.sandboxes
                    else "no service of the sandbox runs on this node any more",
                    step=RemoveNetwork(step_id=f"cleanup:{node}:{network.name}",
                                       network=network.name),
                ))

    # -- moves across nodes (planner/moves.py) ------------------------------------------------

    def running(self) -> moves.Running:
        if self.running_index is None:
            self.running_index = moves.running_index(self.world)
        return self.running_index

    def holdover(self, sandbox: str, service: str) -> moves.Holdover | None:
        placement = self.placements.get((sandbox, service))
        if placement is None:
            return None
        return moves.holdover(self.world, self.running(), placement=placement,
                              container=self.world.names.container(sandbox, service),
                              deploy_step=None)

    def move_away(self, container: ObservedContainer, node: str) -> bool:
        """Whether ``container`` on ``node`` is what a service moved to another node leaves:
        then its drain is planned (a retire) or, the move not made yet, it is kept."""
        sandbox = container.labels.get(LABEL_SANDBOX, "")
        service = container.labels.get(LABEL_SERVICE) or ""
        if container.labels.get(LABEL_KIND) != "service" or sandbox not in self.sandboxes:
            return False
        target = self.placements.get((sandbox, service))
        if target is None or target.node == node:
            return False
        deploy = self.deploy_steps.get((sandbox, service))
        drain = moves.drain_change(self.world, self.running(), container=container, node=node,
                                   sandbox=sandbox, service=service, target=target,
                                   deploy_step=deploy)
        if drain is not None:
            self.retires.append(drain)
            return True
        if container.state != "running":
            return False  # nothing to keep serving: removed as before
        self.moves_kept.add((node, sandbox))
        self.move_notes.append(
            f"sandbox {sandbox}: service {service} stays on node {node} until it runs on node "
            f"{target.node} (its deploy there failed or is held; the routes keep pointing at "
            f"{node})")
        return True

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


def _with_routes(change: Change, routes: tuple[RouteChoice, ...]) -> Change:
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
    desired: DesiredState | None = None,
) -> Plan:
    """The changes that bring the nodes to the state. Pure and deterministic.

    ``desired`` is what ``desired.desire`` built from the same inputs (the pass builds it once
    and keeps it); when None it is built here from ``problems``, ``restarts``, ``held`` and
    ``data`` (``desired_data(sandboxes, world)`` when not given). ``retired`` names sandboxes
    whose files exist but whose containers must go (expiry), with the reason; they are not in
    ``sandboxes``. ``held`` names sandboxes to leave exactly as they run (an unauthorised
    change, docs/access.md): nothing of theirs is created, changed or removed (their data
    services neither); they are not in ``sandboxes`` either. ``resets`` are (sandbox, entry)
    to re-clone. ``only`` (a scoped pass) limits removals to those sandboxes: the containers,
    networks and data of any other are left as they are.
    """
    allocations = list(allocations)
    if desired is None:
        desired = desire(sandboxes=sandboxes, world=world, placements=placements,
                         allocations=allocations, problems=problems, restarts=restarts,
                         held=held, data=data)
    planner = _Planner(
        sandboxes=sandboxes, world=world, placements=placements,
        ports={(a.sandbox, a.service): a for a in allocations},
        retired=dict(retired or {}), only=only, problems=list(desired.problems),
        blocked=set(desired.blocked),
    )
    notes = [f"node {name} is unreachable: {view.unreachable}"
             for name, view in sorted(world.nodes.items()) if view.unreachable]

    wanted: set[tuple[str, str]] = set()
    wanted_networks: set[tuple[str, str]] = set()
    for name, things in desired.things.items():
        gateways: list[DesiredGateway] = []
        for thing in things:
            match thing:
                case DesiredNetwork():
                    wanted_networks.add((thing.node, thing.name))
                    if not planner.network_exists(thing.node, thing.name) \
                            and not thing.suspended:
                        planner.changes.append(Change(
                            action=Action.CREATE, subject=Subject.NETWORK, phase=Phase.SERVICES,
                            sandbox=name, service=None, node=thing.node, resource=thing.name,
                            reason="the sandbox's services need it",
                            step=EnsureNetwork(step_id=f"services:{thing.node}:{thing.name}",
                                               sandbox=name, network=thing.name),
                            location=thing.origin,
                        ))
                case DesiredService():
                    wanted.add((thing.node, thing.values.container))
                    compared = planner.compare(thing)
                    if compared is not None:
                        planner.changes.append(compared)
                        if compared.action is not Action.STOP:
                            planner.deploy_steps[(name, thing.service)] = compared.step_id
                case DesiredGateway():
                    wanted.add((thing.node, thing.values.container))
                    gateways.append(thing)  # after the services: its routes wait for them
                case _:
                    assert_never(thing)
        for gateway in gateways:
            planner.changes += planner.plan_routes(gateway, planner.compare(gateway))

    planner.removals(wanted, wanted_networks)
    for retire in planner.retires:
        routes = tuple(c.step_id for c in planner.changes if c.sandbox == retire.sandbox
                       and c.phase is Phase.ROUTES)
        planner.changes.append(replace(retire, after=retire.after + routes))
    planner.changes = moves.hold_networks(planner.changes)
    notes += planner.move_notes
    data_plan = plan_data(data=desired.data, world=world, sandboxes=sandboxes,
                          blocked=planner.blocked, retired=planner.retired, resets=resets)
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


__all__ = ["Restart", "plan"]
