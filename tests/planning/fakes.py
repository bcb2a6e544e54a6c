"""``InMemoryNodes``: SDP's agents as plain dictionaries, for planner convergence tests.

It carries out the same convergence steps the real agents do (``sdp_node/converge.py``), with
the effects the planner can see through ``observe``: containers with SDP's labels, networks,
each gateway's live and committed routes, the last applied spec of each container, and an INFRA
node's data servers, sources and services (an ensure makes a ready service, a complete
database keeps its source until a re-clone; a drop removes it). Nothing
is built or run. A step can be made to fail: like the real agent, a failed deploy leaves the
previous container as it was.

Phases run like ``applying.Applier.run``: data, services, then routes (settled with the
services' results by the real ``plan.settle_routes``), cleanup, data cleanup.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from msgspec import Struct, field

from sdp_node.naming import DEFAULT_NAMES, GATEWAY
from sdp_node.protocol import (
    DATA_STEP_TYPES,
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
    CaptureDatabase,
    ContainerSpec,
    DataKind,
    DataServerInfo,
    DataSourceInfo,
    DataState,
    DataStep,
    DeployGateway,
    DeployService,
    DeployState,
    DrainContainer,
    DropCapturedSource,
    DropDatabase,
    DropRabbitmqVhost,
    DropRedisUser,
    EnsureDatabase,
    EnsureNetwork,
    EnsureRabbitmqVhost,
    EnsureRedisUser,
    FailureReason,
    NodeInfo,
    NodeType,
    Observation,
    ObservedContainer,
    ObservedDataService,
    ObservedFailure,
    ObservedGateway,
    ObservedNetwork,
    RecloneDatabase,
    RemoveContainer,
    RemoveNetwork,
    RepositoryInfo,
    RetireContainer,
    SetRoutes,
    StartContainer,
    Step,
    StepResult,
    StopContainer,
)
from sdp_reconciler.apply.applying import ApplyOutcome
from sdp_reconciler.planner.plan import PHASE_ORDER, Phase, Plan, settle_routes
from sdp_reconciler.planner.world import NodeView, ResolvedEnvironment, World
from sdp_reconciler.state.models import Node

RUNNING = ("running", "restarting")


class InMemoryNode(Struct):
    """One agent's objects: what its ``observe`` would report."""

    node: Node
    installation: str
    repositories: dict[str, RepositoryInfo]
    containers: dict[str, ObservedContainer] = field(default_factory=dict)
    networks: dict[str, ObservedNetwork] = field(default_factory=dict)
    gateways: dict[str, ObservedGateway] = field(default_factory=dict)
    last_applied: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, ObservedFailure] = field(default_factory=dict)
    """container -> the failed deploy the agent remembers (see ``remember_failure``)"""
    unreachable: str | None = None
    data_servers: list[DataServerInfo] = field(default_factory=list)
    data_sources: list[DataSourceInfo] = field(default_factory=list)
    data_services: dict[tuple[DataKind, str], ObservedDataService] = field(default_factory=dict)

    def labels(self, **extra: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true", LABEL_INSTANCE: self.installation,
            LABEL_NODE: self.node.name, **extra,
        }

    def view(self) -> NodeView:
        if self.unreachable is not None:
            return NodeView(node=self.node, unreachable=self.unreachable)
        observation = Observation(
            node=NodeInfo(name=self.node.name, type=NodeType(self.node.type.value),
                          installation=self.installation, version="test"),
            containers=[self.containers[k] for k in sorted(self.containers)],
            networks=[self.networks[k] for k in sorted(self.networks)],
            gateways=[self.gateways[k] for k in sorted(self.gateways)],
            last_applied={k: dict(v) for k, v in sorted(self.last_applied.items())},
            operations_in_flight=[], data_servers=list(self.data_servers),
            data_sources=list(self.data_sources),
            # like the real agent: a server that does not answer lists none of its services
            data_services=[self.data_services[k] for k in sorted(self.data_services)
                           if k[0] in {s.kind for s in self.data_servers if s.reachable}],
            failures=[self.failures[k] for k in sorted(self.failures)],
        )
        return NodeView(node=self.node, observation=observation,
                        repositories=dict(self.repositories))


class InMemoryNodes:
    """Every node of an installation, in memory; ``apply`` a plan, ``world`` to observe."""

    def __init__(
        self, *, installation: str, nodes: Collection[Node],
        repositories: Mapping[str, Collection[RepositoryInfo]],
        committed_routes: Mapping[str, Mapping[str, str]],
        committed_routes_at: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.installation = installation
        self.nodes = {
            n.name: InMemoryNode(n, installation, {r.name: r for r in repositories.get(n.name, ())})
            for n in sorted(nodes, key=lambda n: n.name)
        }
        self.committed_routes = {k: dict(v) for k, v in committed_routes.items()}
        """gateway repository -> its commits' <key>_url values (OCP values)"""
        self.committed_routes_at = {k: dict(v) for k, v in (committed_routes_at or {}).items()}
        """gateway commit -> its values, for a commit that differs from the repository's"""
        self.applied: list[Step] = []
        """every step carried out, in order (a pass with nothing to do adds none)"""
        self._ids = itertools.count(1)

    # -- observing --------------------------------------------------------------------------------

    def world(
        self, *, spec_key: bytes, heads: Mapping[str, Mapping[str, str]],
        environments: Mapping[str, ResolvedEnvironment] | None = None,
        head_errors: Mapping[str, str] | None = None,
        environment_errors: Mapping[str, str] | None = None,
    ) -> World:
        return World(
            installation=self.installation, spec_key=spec_key,
            nodes={name: node.view() for name, node in self.nodes.items()},
            heads={r: dict(b) for r, b in heads.items()},
            head_errors=dict(head_errors or {}),
            environments=dict(environments or {}),
            environment_errors=dict(environment_errors or {}),
            committed_routes=self.routes_of_heads(heads),
        )

    def routes_of_heads(self, heads: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        """Gateway commit -> its values, for every head of a gateway repository (what
        ``observing.gateway_commit_routes`` asks the gateway's agent for)."""
        found: dict[str, dict[str, str]] = {}
        for repository, values in self.committed_routes.items():
            for commit in heads.get(repository, {}).values():
                found[commit] = dict(self.committed_routes_at.get(commit, values))
        found.update({c: dict(v) for c, v in self.committed_routes_at.items()})
        return found

    def gateway(self, container: str) -> ObservedGateway | None:
        found = [n.gateways[container] for n in self.nodes.values() if container in n.gateways]
        return found[0] if found else None

    # -- applying ---------------------------------------------------------------------------------

    def apply(self, plan: Plan, *, failing: Collection[str] = ()) -> ApplyOutcome:
        """Carry out ``plan`` phase by phase; deploys or starts of ``failing`` containers fail."""
        outcome = ApplyOutcome()
        for phase in PHASE_ORDER:
            for batch_phase, node, changes in plan.batches():
                if batch_phase is not phase:
                    continue
                for change in changes:
                    step = change.step
                    if phase is Phase.CLEANUP and outcome.failed_steps() & set(change.after):
                        continue  # as the Applier: a retire waits for its deploy and routes
                    if phase is Phase.ROUTES:
                        step = settle_routes(change, outcome.failed_steps())
                    outcome.results[step.step_id] = self.run(node, step, failing=failing)
        return outcome

    def run(self, node_name: str, step: Step, *, failing: Collection[str] = ()) -> StepResult:
        node = self.nodes[node_name]
        if node.unreachable is not None:
            raise AssertionError(f"a plan sent a step to unreachable node {node_name}: {step}")
        self.applied.append(step)
        ok = True
        data_service: ObservedDataService | None = None
        if isinstance(step, EnsureNetwork):
            node.networks.setdefault(step.network, ObservedNetwork(
                name=step.network, id=self._id(), labels=node.labels(
                    **{LABEL_SANDBOX: step.sandbox})))
        elif isinstance(step, DeployService | DeployGateway):
            ok = step.spec.container not in failing and not self._port_taken(node, step.spec)
            if ok:
                self._deploy(node, step)
        elif isinstance(step, SetRoutes):
            gateway = node.gateways[step.container]
            node.gateways[step.container] = gateway.model_copy(
                update={"live_routes": {**gateway.live_routes, **step.routes}})
        elif isinstance(step, StopContainer):
            self._set_state(node, step.container, "exited")
        elif isinstance(step, StartContainer):
            ok = step.container not in failing
            if ok:
                self._set_state(node, step.container, "running")
        elif isinstance(step, RemoveContainer | DrainContainer):
            node.containers.pop(step.container, None)
            node.containers.pop(step.container + "--previous", None)
            node.gateways.pop(step.container, None)
            node.last_applied.pop(step.container, None)
        elif isinstance(step, RetireContainer):
            node.containers.pop(step.container + "--previous", None)
        elif isinstance(step, RemoveNetwork):
            node.networks.pop(step.network, None)
        elif isinstance(step, DATA_STEP_TYPES):
            ok = step.service not in failing
            if ok:
                data_service = self._data(node, step)
        else:  # pragma: no cover - Step is a closed union
            raise AssertionError(step)
        return StepResult(step_id=step.step_id, action=step.action, ok=ok,
                          state=DeployState.RUNNING if ok else DeployState.FAILED,
                          changed=ok, message="" if ok else "failed on purpose",
                          data_service=data_service)

    @staticmethod
    def _data(node: InMemoryNode, step: DataStep) -> ObservedDataService | None:
        match step:
            case EnsureDatabase() | RecloneDatabase():
                kind, name, user, source = DataKind.POSTGRESQL, step.database, step.database, \
                    step.source
            case EnsureRedisUser():
                kind, name, user, source = DataKind.REDIS, step.user, step.user, None
            case EnsureRabbitmqVhost():
                kind, name, user, source = DataKind.RABBITMQ, step.vhost, step.user, None
            case DropDatabase():
                node.data_services.pop((DataKind.POSTGRESQL, step.database), None)
                return None
            case DropRedisUser():
                node.data_services.pop((DataKind.REDIS, step.user), None)
                return None
            case DropRabbitmqVhost():
                node.data_services.pop((DataKind.RABBITMQ, step.vhost), None)
                return None
            case CaptureDatabase():  # the sandbox's database stays as it is
                return node.data_services.get((DataKind.POSTGRESQL, step.database))
            case DropCapturedSource():
                return None
        existing = node.data_services.get((kind, name))
        if existing is not None and existing.state is DataState.READY \
                and not isinstance(step, RecloneDatabase):
            source = existing.source  # a complete database keeps its source
        made = ObservedDataService(
            kind=kind, name=name, user=user, sandbox=step.sandbox, service=step.service,
            source=source, state=DataState.READY, spec_hash=step.spec_hash,
            key_prefix=name + ":" if kind is DataKind.REDIS else None,
        )
        node.data_services[(kind, name)] = made
        return made

    def _deploy(self, node: InMemoryNode, step: DeployService | DeployGateway) -> None:
        spec = step.spec
        gateway = isinstance(step, DeployGateway)
        if isinstance(step, DeployService):
            assert step.network == DEFAULT_NAMES.network(spec.sandbox)
            assert step.network in node.networks, f"{step.network} missing on {node.node.name}"
        current = node.containers.get(spec.container)
        if current is not None and current.state == "running" and \
                current.labels.get(LABEL_PORT) != str(spec.port):
            # A switch: the previous instance keeps serving until it is retired.
            aside = spec.container + "--previous"
            node.containers[aside] = current.model_copy(update={"name": aside, "aside": True})
        node.containers[spec.container] = observed_container(
            node.labels(), spec, image=node.repositories[spec.repository].image, id=self._id())
        node.last_applied[spec.container] = dict(spec.public_spec)
        node.failures.pop(spec.container, None)
        if gateway:
            assert isinstance(step, DeployGateway)
            committed = self.committed_routes_at.get(
                spec.commit, self.committed_routes.get(spec.repository, {}))
            node.gateways[spec.container] = ObservedGateway(
                container=spec.container, sandbox=spec.sandbox, commit=spec.commit,
                live_routes={**committed, **step.routes}, committed_routes=dict(committed),
            )

    def _port_taken(self, node: InMemoryNode, spec: ContainerSpec) -> bool:
        """Docker refuses to publish a port another container of the node publishes."""
        return any(
            c.labels.get(LABEL_PORT) == str(spec.port) and c.state in RUNNING
            for name, c in node.containers.items() if name != spec.container and not c.aside
        )

    def _set_state(self, node: InMemoryNode, name: str, state: str) -> None:
        current = node.containers[name]
        node.containers[name] = current.model_copy(update={"state": state})

    def _id(self) -> str:
        return f"{next(self._ids):012x}"

    # -- what people do by hand -------------------------------------------------------------------

    def stop_by_hand(self, container: str) -> None:
        for node in self.nodes.values():
            if container in node.containers:
                self._set_state(node, container, "exited")

    def remove_by_hand(self, container: str) -> None:
        """``docker rm -f``: the agent still remembers the container's last applied spec."""
        for node in self.nodes.values():
            node.containers.pop(container, None)
            node.gateways.pop(container, None)

    def edit_routes_by_hand(self, container: str, **urls: str) -> None:
        for node in self.nodes.values():
            gateway = node.gateways.get(container)
            if gateway is not None:
                node.gateways[container] = gateway.model_copy(update={
                    "live_routes": {**gateway.live_routes,
                                    **{k.removesuffix("_url"): v for k, v in urls.items()}}})

    def remember_failure(self, node: str, spec: ContainerSpec,
                         reason: FailureReason = FailureReason.HEALTH_CHECK_FAILED) -> None:
        """What the agent keeps after a deploy of ``spec`` failed (build, crash, health)."""
        self.nodes[node].failures[spec.container] = ObservedFailure(
            container=spec.container, sandbox=spec.sandbox, service=spec.service,
            commit=spec.commit, spec_hash=spec.attempt_key, reason=reason,
            message="did not answer /healthz (last: HTTP 500)", health_answer="HTTP 500",
            log_tail=["listening on :8080"], at=datetime(2026, 12, 1, tzinfo=UTC))

    def put(self, node: str, container: ObservedContainer) -> None:
        self.nodes[node].containers[container.name] = container

    def make_unreachable(self, node: str, why: str = "connection refused") -> None:
        self.nodes[node].unreachable = why


def observed_container(
    base_labels: Mapping[str, str], spec: ContainerSpec, *, image: str, id: str,
    state: str = "running", name: str | None = None,
) -> ObservedContainer:
    """The container an agent runs for ``spec``, labelled as ``converge.py`` labels it."""
    labels = {
        **base_labels,
        LABEL_SANDBOX: spec.sandbox, LABEL_SERVICE: spec.service,
        LABEL_REPOSITORY: spec.repository, LABEL_BRANCH: spec.branch,
        LABEL_COMMIT: spec.commit, LABEL_PORT: str(spec.port), LABEL_SPEC: spec.spec_hash,
        LABEL_KIND: "gateway" if spec.service == GATEWAY else "service",
    }
    name = name or spec.container
    return ObservedContainer(
        name=name, id=id, labels=labels, state=state,
        status="Up 1 minute" if state in RUNNING else "Exited (0)", image=image,
        aside=name.endswith("--previous"),
    )
