"""The data services of the sandboxes, desired and planned (pure; docs/infra.md).

``desired_data`` turns each sandbox's merged ``data:`` entries into one frozen
``DesiredData`` per database, Redis user or vhost: the INFRA node it lives on, SDP's name for
it, the derived password, the spec hash stamped on its marker, and the variables the sandbox's
containers get. It is built once per pass (``reconcile.prepare``, which registers the passwords
for redaction) and read by ``planning.plan`` twice: for the containers' environments and for
``plan_data``, which compares it with the INFRA nodes' ``data_services``:

* ``+`` ensure when missing or ``incomplete``, ``~`` when its stamped spec hash differs (the
  password changed with the spec-hash key), ``-/+`` re-clone on ``reset``; all in phase
  ``data``, before the sandbox's services start (so a new branch boots on its own copy);
* nothing for a suspended sandbox (its data is kept, and not made while it sleeps);
* ``-`` drop, in phase ``data-cleanup`` after the containers are gone, of what this
  installation made on a node and the state no longer wants (sandbox deleted or retired, entry
  removed, moved to another node); a sandbox with a problem is left alone, and a deleted one
  keeps its data while a MICRO or GATEWAY node does not answer (a container of it may still
  run there);
* a node that did not answer, a server it does not manage or cannot reach, or a source it does
  not offer when a clone is due, is a problem of the sandbox (nothing of it is applied): an
  unreachable server lists no services, and "create everything" would be wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from functools import cached_property

from msgspec import Struct, field

from sdp_node.protocol import (
    DataKind,
    DataServerInfo,
    DataState,
    DropDatabase,
    DropRabbitmqVhost,
    DropRedisUser,
    EnsureDatabase,
    EnsureRabbitmqVhost,
    EnsureRedisUser,
    ObservedDataService,
    RecloneDatabase,
    Secret,
    Step,
)
from sdp_reconciler.planner.dataenv import data_password, injected_env, resource_name
from sdp_reconciler.planner.plan import Action, Change, ChangeDetail, DetailKind, Phase, Subject
from sdp_reconciler.planner.specs import digest
from sdp_reconciler.planner.world import World
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import NodeType
from sdp_reconciler.state.resolved import ResolvedSandbox

SPEC_CONTEXT = "sdp-data-spec/1"
SUBJECTS = {DataKind.POSTGRESQL: Subject.DATABASE, DataKind.REDIS: Subject.REDIS_USER,
            DataKind.RABBITMQ: Subject.RABBITMQ_VHOST}
DataKey = tuple[str, str]
"""(sandbox, entry)"""
Reset = tuple[str, str]
"""(sandbox, entry) to re-clone from its source"""


class DesiredData(Struct, frozen=True):
    """One data service a sandbox wants, as the INFRA node should hold it."""

    sandbox: str
    entry: str
    kind: DataKind
    node: str
    resource: str
    """the database (= role), Redis user or vhost (= user)"""
    source: str | None
    password: Secret
    spec_hash: str
    env: Mapping[str, str]
    secret_env: Mapping[str, Secret]
    location: Location


class DesiredDataSet(Struct, frozen=True, dict=True):  # dict: for the cached_property
    """Every sandbox's data services this pass, and why some could not be built."""

    services: Mapping[DataKey, DesiredData] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    def of(self, sandbox: str) -> list[DesiredData]:
        return self._by_sandbox.get(sandbox, [])

    @cached_property
    def _by_sandbox(self) -> dict[str, list[DesiredData]]:
        """sandbox -> its data services, by entry name: built once, not scanned per call"""
        out: dict[str, list[DesiredData]] = {}
        for (sandbox, _entry), desired in sorted(self.services.items()):
            out.setdefault(sandbox, []).append(desired)
        return out

    def env_of(self, sandbox: str) -> tuple[dict[str, str], dict[str, Secret]]:
        """The variables the sandbox's containers get from its data services."""
        env: dict[str, str] = {}
        secret_env: dict[str, Secret] = {}
        for desired in self.of(sandbox):
            env.update(desired.env)
            secret_env.update(desired.secret_env)
        return env, secret_env

    def passwords(self) -> list[str]:
        return [d.password.reveal() for d in self.services.values()]


def data_spec_hash(key: bytes, kind: DataKind, resource: str, password: Secret) -> str:
    """What an ensure stamps on the marker: changes when the password does (not the source,
    which a complete database keeps until a re-clone)."""
    message = "\n".join([SPEC_CONTEXT, kind.value, resource, digest(key, password.reveal())])
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:32]


def _server(world: World, node: str, kind: DataKind) -> DataServerInfo | str:
    """The node's server of ``kind``, or why a data service cannot be planned there."""
    view = world.nodes.get(node)
    if view is None or view.observation is None:
        return f"INFRA node {node} is unreachable ({view.unreachable if view else 'unknown'})" \
            "; sandbox left as is"
    for server in view.observation.data_servers:
        if server.kind is kind:
            if not server.reachable:
                return (f"the {kind.value} server of INFRA node {node} does not answer "
                        f"({server.problem or 'unreachable'}); sandbox left as is")
            return server
    return f"INFRA node {node} manages no {kind.value} server (its node.yaml data.{kind.value})"


def desired_data(sandboxes: Mapping[str, ResolvedSandbox], world: World) -> DesiredDataSet:
    infra = [v.node.name for v in world.nodes_of(NodeType.INFRA)]
    services: dict[DataKey, DesiredData] = {}
    problems: list[Problem] = []
    for name, sandbox in sorted(sandboxes.items()):
        for entry_name, data in sandbox.data.items():
            entry = data.entry
            node = entry.node or (infra[0] if len(infra) == 1 else None)
            if node is None:  # the state's rules refuse this; a World built by hand may not
                problems.append(Problem(data.origin, f"data.{entry_name}",
                                        "no single INFRA node to hold this entry"))
                continue
            server = _server(world, node, entry.kind)
            if isinstance(server, str):
                problems.append(Problem(data.origin, f"data.{entry_name}", server))
                continue
            resource = resource_name(world.names, name, entry_name, entry.kind)
            password = data_password(world.spec_key, installation=world.installation,
                                     kind=entry.kind, resource=resource)
            env, secret_env = injected_env(entry_name, entry, sandbox=name, names=world.names,
                                           server=server, password=password)
            services[(name, entry_name)] = DesiredData(
                sandbox=name, entry=entry_name, kind=entry.kind, node=node, resource=resource,
                source=entry.source, password=password,
                spec_hash=data_spec_hash(world.spec_key, entry.kind, resource, password),
                env=env, secret_env=secret_env, location=data.origin,
            )
    return DesiredDataSet(services=services, problems=tuple(problems))


class DataPlan(Struct, frozen=True):
    changes: tuple[Change, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    blocked: frozenset[str] = frozenset()
    """sandboxes a data problem leaves alone (their container changes are dropped too)"""


def _ensure_step(desired: DesiredData, step_id: str, reclone: bool) -> Step:
    common = {"step_id": step_id, "sandbox": desired.sandbox, "service": desired.entry,
              "password": desired.password, "spec_hash": desired.spec_hash}
    match desired.kind:
        case DataKind.POSTGRESQL:
            assert desired.source is not None
            kind = RecloneDatabase if reclone else EnsureDatabase
            return kind(database=desired.resource, source=desired.source, **common)
        case DataKind.REDIS:
            return EnsureRedisUser(user=desired.resource, key_prefix=desired.resource + ":",
                                   **common)
        case DataKind.RABBITMQ:
            return EnsureRabbitmqVhost(vhost=desired.resource, user=desired.resource, **common)


def _drop_step(observed: ObservedDataService, step_id: str) -> Step:
    common = {"step_id": step_id, "sandbox": observed.sandbox, "service": observed.service}
    match observed.kind:
        case DataKind.POSTGRESQL:
            return DropDatabase(database=observed.name, **common)
        case DataKind.REDIS:
            return DropRedisUser(user=observed.name, **common)
        case DataKind.RABBITMQ:
            return DropRabbitmqVhost(vhost=observed.name, user=observed.user, **common)


def plan_data(
    *, data: DesiredDataSet, world: World, sandboxes: Mapping[str, ResolvedSandbox],
    blocked: Iterable[str], retired: Mapping[str, str], resets: Iterable[Reset] = (),
) -> DataPlan:
    """Ensures, re-clones and drops that bring the INFRA nodes to ``data``."""
    blocked = set(blocked)
    newly_blocked: set[str] = set()
    resets = set(resets)
    observed: dict[tuple[str, DataKind, str], ObservedDataService] = {}
    sources: dict[tuple[str, str], str | None] = {}
    for view in world.nodes_of(NodeType.INFRA):
        if view.observation is None:
            continue
        node = view.node.name
        for service in view.observation.data_services:
            observed[(node, service.kind, service.name)] = service
        for source in view.observation.data_sources:
            sources[(node, source.name)] = source.problem
    changes: list[Change] = []
    problems: list[Problem] = []
    notes: list[str] = []
    for key, desired in sorted(data.services.items()):
        if desired.sandbox in blocked or sandboxes[desired.sandbox].suspended:
            continue
        current = observed.get((desired.node, desired.kind, desired.resource))
        reset = key in resets
        if current is None:
            action, reason = Action.CREATE, "missing: the sandbox's services need it"
        elif reset:
            action, reason = Action.RECREATE, "reset requested: a fresh copy of its source"
        elif current.state is DataState.INCOMPLETE:
            action = Action.CREATE
            reason = f"incomplete ({current.problem or 'interrupted'}): made again"
        elif current.spec_hash != desired.spec_hash:
            action, reason = Action.UPDATE, "password changed (the spec-hash key changed)"
        else:
            action, reason = None, ""
        if current is not None and desired.source is not None \
                and current.source not in (None, desired.source) and not reset:
            notes.append(
                f"database {desired.resource} of sandbox {desired.sandbox} was cloned from "
                f"{current.source}; the state says {desired.source}: it is kept until "
                f"'sdp-reconcile reset {desired.sandbox} {desired.entry}'")
        if action is None:
            continue
        clones = desired.kind is DataKind.POSTGRESQL and (
            current is None or reset or current.state is DataState.INCOMPLETE)
        if clones:
            assert desired.source is not None
            problem = sources.get((desired.node, desired.source), "unknown")
            if problem is not None:
                offered = sorted(s for n, s in sources if n == desired.node)
                why = (f"INFRA node {desired.node} offers no source {desired.source!r} "
                       f"(sources: {', '.join(offered) or 'none'})") if problem == "unknown" \
                    else f"source {desired.source!r} on {desired.node}: {problem}"
                problems.append(Problem(desired.location, f"data.{desired.entry}", why))
                blocked.add(desired.sandbox)
                newly_blocked.add(desired.sandbox)
                continue
        step_id = f"data:{desired.node}:{desired.kind.value}:{desired.resource}"
        changes.append(Change(
            action=action, subject=SUBJECTS[desired.kind], phase=Phase.DATA,
            sandbox=desired.sandbox, service=desired.entry, node=desired.node,
            resource=desired.resource, reason=reason,
            step=_ensure_step(desired, step_id, reclone=reset and current is not None),
            location=desired.location,
            detail=ChangeDetail(DetailKind.DATA, source=desired.source, clones=clones),
        ))
    wanted = {(d.node, d.kind, d.resource) for d in data.services.values()}
    # A container of a deleted sandbox on a node that did not answer may still use its data.
    silent = sorted(v.node.name for v in world.nodes.values()
                    if v.node.type is not NodeType.INFRA and v.observation is None)
    for (node, kind, name), service in sorted(observed.items()):
        if (node, kind, name) in wanted or service.sandbox in blocked:
            continue
        if silent and service.sandbox not in sandboxes:
            notes.append(f"{SUBJECTS[kind].value} {name} of sandbox {service.sandbox} is kept "
                         "this pass: "
                         f"node {', '.join(silent)} did not answer, and a container of the "
                         "sandbox may still run there")
            continue
        changes.append(Change(
            action=Action.REMOVE, subject=SUBJECTS[kind], phase=Phase.DATA_CLEANUP,
            sandbox=service.sandbox, service=service.service, node=node, resource=name,
            reason=_drop_reason(service, node, data, sandboxes, retired),
            step=_drop_step(service, f"data-cleanup:{node}:{kind.value}:{name}"),
            detail=ChangeDetail(DetailKind.DATA_DROP, source=service.source),
        ))
    changes = [c for c in changes if c.sandbox not in blocked]
    return DataPlan(changes=tuple(changes), problems=tuple(problems), notes=tuple(notes),
                    blocked=frozenset(newly_blocked))


def _drop_reason(service: ObservedDataService, node: str, data: DesiredDataSet,
                 sandboxes: Mapping[str, ResolvedSandbox], retired: Mapping[str, str]) -> str:
    if service.sandbox in retired:
        return retired[service.sandbox]
    if service.sandbox not in sandboxes:
        return "sandbox deleted"
    desired = data.services.get((service.sandbox, service.service))
    if desired is None:
        return "entry removed from the sandbox's data"
    if desired.node != node:
        return f"entry moved to node {desired.node}"
    return f"entry is now {desired.kind.value}, not {service.kind.value}"


__all__ = ["DataPlan", "DesiredData", "DesiredDataSet", "Reset", "data_spec_hash",
           "desired_data", "plan_data"]
