"""Capturing a sandbox's database as a new source, and dropping one (pure; docs/infra.md).

``snapshot SANDBOX NAME --data ENTRY`` and ``drop-source SOURCE`` each apply one change on one
INFRA node, decided here from the pass's desired data and the nodes' observations:

* ``plan_capture``: ``+ source NAME on infra-1`` copying the sandbox's **ready** database; the
  name must be a valid SDP name, not a source the node already lists (node.yaml's or a
  captured one), the node must answer; otherwise the reason, and nothing is applied;
* ``plan_drop_source``: ``- source NAME on infra-1``, only for a source the node reports as
  captured by SDP, and only while no sandbox of the state clones from it (a reset or a new
  sandbox would then fail): node.yaml's sources are the administrator's, never SDP's to drop.

Each returns the ``Change``, or a message that says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping

from sdp_node.protocol import CaptureDatabase, DataKind, DataState, DropCapturedSource
from sdp_reconciler.planner.dataplanning import DesiredDataSet
from sdp_reconciler.planner.plan import Action, Change, ChangeDetail, DetailKind, Phase, Subject
from sdp_reconciler.planner.world import World
from sdp_reconciler.state.models import NodeType
from sdp_reconciler.state.resolved import ResolvedSandbox


def plan_capture(*, data: DesiredDataSet, world: World,
                 sandboxes: Mapping[str, ResolvedSandbox], sandbox: str, entry: str,
                 source: str) -> Change | str:
    resolved = sandboxes.get(sandbox)
    if resolved is None:
        known = ", ".join(sorted(sandboxes)) or "none"
        return f"no sandbox {sandbox!r} in the state (sandboxes: {known})"
    desired = data.services.get((sandbox, entry))
    if desired is None or desired.kind is not DataKind.POSTGRESQL:
        entries = ", ".join(f"{n} ({d.entry.kind.value})" for n, d in resolved.data.items())
        origin = resolved.data[entry].origin if entry in resolved.data else None
        why = "; ".join(p.message for p in data.problems if p.location == origin)
        return (f"sandbox {sandbox!r} has no PostgreSQL data entry {entry!r} to capture (its "
                f"data: {entries or 'none'})" + (f": {why}" if why else ""))
    problem = world.names.captured_problem(source)
    if problem:
        return problem
    view = world.nodes[desired.node]
    if view.observation is None:
        return f"INFRA node {desired.node} is unreachable ({view.unreachable})"
    for offered in view.observation.data_sources:
        if offered.name == source:
            whose = f"captured from {offered.captured_from}" if offered.captured_from \
                else "node.yaml's"
            return (f"INFRA node {desired.node} already offers a source {source!r} ({whose}): "
                    "choose another name" + (f", or drop it first: sdp-reconcile drop-source "
                                             f"{source}" if offered.captured_from else ""))
    current = next((s for s in view.observation.data_services
                    if s.kind is DataKind.POSTGRESQL and s.name == desired.resource), None)
    if current is None or current.state is not DataState.READY:
        state = "missing" if current is None else f"{current.state.value}: {current.problem}"
        return (f"database {desired.resource} of sandbox {sandbox!r} is not ready on "
                f"{desired.node} ({state}): run 'sdp-reconcile --once' first")
    step = CaptureDatabase(
        step_id=f"data:{desired.node}:source:{source}", sandbox=sandbox, service=entry,
        database=desired.resource, source=source,
        template=world.names.captured_source(source))
    return Change(
        action=Action.CREATE, subject=Subject.SOURCE, phase=Phase.DATA, sandbox=sandbox,
        service=entry, node=desired.node, resource=source,
        reason=f"captured from database {desired.resource} (sandbox {sandbox}, entry {entry})",
        step=step, location=desired.location,
        detail=ChangeDetail(DetailKind.CAPTURE, captured_from=desired.resource,
                            template=step.template),
    )


def plan_drop_source(*, world: World, sandboxes: Mapping[str, ResolvedSandbox], source: str,
                     node: str | None = None) -> Change | str:
    infra = [v for v in world.nodes_of(NodeType.INFRA) if node is None or v.node.name == node]
    if not infra:
        return f"no INFRA node {node!r} in nodes.yaml" if node else "nodes.yaml has no INFRA node"
    silent = [v.node.name for v in infra if v.observation is None]
    found = [(v.node.name, s) for v in infra if v.observation is not None
             for s in v.observation.data_sources if s.name == source]
    if not found:
        where = ", ".join(v.node.name for v in infra)
        extra = f"; {', '.join(silent)} did not answer" if silent else ""
        return f"no INFRA node lists a source {source!r} ({where}{extra})"
    if len(found) > 1:
        return (f"source {source!r} is on {', '.join(n for n, _s in found)}: name one with "
                "--node")
    where, info = found[0]
    if info.captured_from is None:
        return (f"source {source!r} on {where} is node.yaml's, not one SDP captured: SDP "
                "never drops it (remove it from node.yaml and drop the database yourself)")
    users = sorted(f"{name}/{entry} ({data.origin})" for name, sandbox in sandboxes.items()
                   for entry, data in sandbox.data.items() if data.entry.source == source)
    if users:
        return (f"source {source!r} is still the from: of {', '.join(users)}: change those "
                "entries first (a reset or a new sandbox would have nothing to clone)")
    origin, _sep, entry = info.captured_from.partition("/")
    step = DropCapturedSource(step_id=f"data-cleanup:{where}:source:{source}", sandbox=origin,
                              service=entry, source=source,
                              template=world.names.captured_source(source))
    return Change(
        action=Action.REMOVE, subject=Subject.SOURCE, phase=Phase.DATA_CLEANUP, sandbox=origin,
        service=entry, node=where, resource=source,
        reason=f"drop-source requested (captured from {info.captured_from})", step=step,
        detail=ChangeDetail(DetailKind.SOURCE_DROP, template=step.template),
    )


__all__ = ["plan_capture", "plan_drop_source"]
