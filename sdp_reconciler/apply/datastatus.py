"""Status rows of a sandbox's data services (pure; shown by ``status`` and the page).

One row per entry, ``service`` = ``data.<entry>`` (a service name cannot hold a dot, so the
rows never meet a container's): the INFRA node, the kind in ``route``, the address without
credentials in ``url`` (``postgresql://10.0.0.3:5432/sandbox_qa_db``), the source in
``branch``, and sync/health as for containers: ``Ready``, ``ChangesPending``, ``DataFailed``,
``Incomplete``, ``Missing`` or ``StateProblem``.
"""

from __future__ import annotations

from msgspec.structs import replace

from sdp_node.protocol import DataKind, DataState, ObservedDataService
from sdp_reconciler.apply.applying import ApplyOutcome
from sdp_reconciler.history import StatusRow
from sdp_reconciler.planner.dataplanning import DesiredData, DesiredDataSet
from sdp_reconciler.planner.plan import Change, Plan
from sdp_reconciler.planner.world import World
from sdp_reconciler.state.resolved import ResolvedSandbox
from sdp_reconciler.statuses import Health, Reason, Sync


def _observed(world: World, desired: DesiredData) -> ObservedDataService | None:
    view = world.nodes.get(desired.node)
    if view is None or view.observation is None:
        return None
    return next((s for s in view.observation.data_services
                 if s.kind is desired.kind and s.name == desired.resource), None)


def _address(world: World, desired: DesiredData) -> str | None:
    view = world.nodes.get(desired.node)
    if view is None or view.observation is None:
        return None
    server = next((s for s in view.observation.data_servers if s.kind is desired.kind), None)
    if server is None:
        return None
    scheme = {DataKind.POSTGRESQL: "postgresql", DataKind.REDIS: "redis",
              DataKind.RABBITMQ: "amqp"}[desired.kind]
    return f"{scheme}://{server.host}:{server.port}/{desired.resource}"


def data_rows(
    sandbox: ResolvedSandbox, *, data: DesiredDataSet, plan: Plan,
    outcome: ApplyOutcome | None, world: World,
) -> list[StatusRow]:
    changes: dict[tuple[str, str], Change] = {
        (c.sandbox, c.service or ""): c for c in plan.changes if c.subject.is_data
    }
    rows = []
    for entry, resolved in sandbox.data.items():
        desired = data.services.get((sandbox.name, entry))
        kind = resolved.entry.kind.value
        if desired is None or sandbox.name in plan.blocked:
            why = "; ".join(p.message for p in plan.problems if p.location == resolved.origin)
            rows.append(StatusRow(
                sandbox=sandbox.name, service=f"data.{entry}", node=desired.node if desired
                else resolved.entry.node, sync=Sync.OUT_OF_SYNC, health=Health.UNHEALTHY,
                reason=Reason.STATE_PROBLEM, message=why or "left as is this pass", route=kind,
                branch=resolved.entry.source,
            ))
            continue
        observed = _observed(world, desired)
        row = StatusRow(
            sandbox=sandbox.name, service=f"data.{entry}", node=desired.node, sync=Sync.IN_SYNC,
            health=Health.HEALTHY, reason=Reason.READY, message=_describe(observed), route=kind,
            branch=observed.source if observed and observed.source else desired.source,
            url=_address(world, desired),
        )
        if observed is None:
            row = replace(row, health=Health.SUSPENDED if sandbox.suspended else Health.UNHEALTHY,
                          reason=Reason.MISSING, message="not made yet" + (
                              " (the sandbox is suspended)" if sandbox.suspended else ""))
        elif observed.state is DataState.INCOMPLETE:
            row = replace(row, health=Health.UNHEALTHY, reason=Reason.INCOMPLETE,
                          message=observed.problem or "incomplete")
        planned = changes.get((sandbox.name, entry))
        if planned is not None and outcome is None:
            row = replace(row, sync=Sync.OUT_OF_SYNC, health=Health.PROGRESSING,
                          reason=Reason.CHANGES_PENDING, message=planned.reason)
        elif planned is not None and outcome is not None:
            result = outcome.results.get(planned.step_id)
            if result is not None and result.ok and result.data_service is not None:
                row = replace(row, sync=Sync.IN_SYNC, health=Health.HEALTHY, reason=Reason.READY,
                              message=_describe(result.data_service),
                              branch=result.data_service.source or row.branch)
            else:
                why = result.message if result else outcome.errors.get(planned.step_id, "")
                row = replace(row, sync=Sync.OUT_OF_SYNC, health=Health.UNHEALTHY,
                              reason=Reason.DATA_FAILED, message=why)
        rows.append(row)
    return rows


def _describe(service: ObservedDataService | None) -> str:
    if service is None:
        return ""
    parts = [service.state.value]
    if service.source:
        parts.append(f"from {service.source}")
    if service.size_bytes is not None:
        parts.append(f"{service.size_bytes / 1024 / 1024:.1f} MiB")
    if service.key_prefix:
        parts.append(f"keys {service.key_prefix}*")
    return ", ".join(parts)


__all__ = ["data_rows"]
