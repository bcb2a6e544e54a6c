"""Sandbox and service status after a pass: sync, health, reason, attempted vs applied commit.

Pure: from the plan, what the nodes confirmed and what they reported. Vocabulary (DESIGN §8,
the Enums of ``sdp_reconciler.statuses``): sync ``InSync`` / ``OutOfSync``; health ``Healthy``
/ ``Progressing`` / ``Degraded`` / ``Unhealthy`` / ``Suspended``; a ``Reason`` and a message.
A failed deploy leaves the previous container serving: that service is ``OutOfSync`` and
``Degraded``, its applied commit still the old one, its attempted commit the new one (as Flux
keeps them). Its reason says why
(``BuildFailed``, ``CrashedOnStart``, ``HealthCheckFailed``; ``DeployFailed`` otherwise) and the
message carries the health path's answer and the container's last log lines; a failure the node
remembers (not retried until the branch moves, the spec changes or a restart asks) is reported
the same way on every later pass. A sandbox's data
services add one row each (``datastatus.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from msgspec.structs import replace

from sdp_node.naming import GATEWAY
from sdp_node.protocol import (
    LABEL_BRANCH,
    LABEL_COMMIT,
    LABEL_PORT,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    ObservedContainer,
    ObservedFailure,
    RetireContainer,
    StepResult,
)
from sdp_reconciler.apply.applying import ApplyOutcome
from sdp_reconciler.apply.datastatus import data_rows
from sdp_reconciler.apply.health import judge
from sdp_reconciler.history import StatusRow
from sdp_reconciler.planner.dataplanning import DesiredDataSet
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.plan import Action, Change, Plan, Subject
from sdp_reconciler.planner.world import Allocation, World
from sdp_reconciler.state.models import HealthRules
from sdp_reconciler.state.resolved import ResolvedSandbox
from sdp_reconciler.statuses import HEALTH_ORDER, Health, Reason, Sync


def _applied_reason(action: Action) -> Reason:
    """The reason of a row whose planned change the node confirmed."""
    match action:
        case Action.CREATE | Action.UPDATE | Action.REMOVE:
            return Reason.DEPLOYED
        case Action.RECREATE:
            return Reason.RESTARTED
        case Action.START:
            return Reason.STARTED
        case Action.STOP:
            return Reason.SUSPENDED
        case _:
            assert_never(action)


def _worst(healths: Iterable[str], default: Health) -> Health:
    """The worst of ``healths`` (a sandbox is as healthy as its worst part)."""
    return max((Health(h) for h in healths), key=HEALTH_ORDER.index, default=default)


def _observed(world: World, node: str | None, name: str) -> ObservedContainer | None:
    view = world.nodes.get(node or "")
    if view is None or view.observation is None:
        return None
    return next((c for c in view.observation.containers if c.name == name and not c.aside),
                None)


def _failure(world: World, node: str | None, name: str) -> ObservedFailure | None:
    view = world.nodes.get(node or "")
    if view is None or view.observation is None:
        return None
    return next((f for f in view.observation.failures if f.container == name), None)


def failure_message(message: str, answer: str | None, tail: list[str], *,
                    remembered: bool = False) -> str:
    """A failed deploy's message: what failed, the health answer, the last log lines."""
    parts = [message]
    if answer and answer not in message:
        parts.append(f"health answer: {answer}")
    lines = [line for line in tail if line.strip()][-5:]
    if lines:
        parts.append("last lines: " + " | ".join(lines))
    if remembered and "not retried" not in message:
        parts.append("not retried until the branch moves, the spec changes or a restart asks")
    return "; ".join(parts)


def _failed_result(result: StepResult) -> tuple[str, str]:
    reason = Reason(result.reason.value) if result.reason is not None else Reason.DEPLOY_FAILED
    if result.reason is None:
        return reason, result.message
    return reason, failure_message(result.message, result.health_answer, result.output_tail)


def _health_of(container: ObservedContainer | None,
               world: World | None = None, node: str | None = None) -> tuple[str, str, str]:
    """(health, reason, message) of a container as the node last reported it, under the
    installation's health rules (``health.py``)."""
    view = world.nodes.get(node or "") if world is not None else None
    metrics = view.metrics.get(container.name) if view and container is not None else None
    rules = world.health_rules if world is not None else HealthRules()
    return judge(container, metrics, rules)


def status_rows(
    *, sandboxes: dict[str, ResolvedSandbox], plan: Plan, outcome: ApplyOutcome | None,
    world: World, placements: dict[tuple[str, str], Placement],
    allocations: list[Allocation], data: DesiredDataSet | None = None,
) -> list[StatusRow]:
    changes: dict[tuple[str, str], Change] = {}
    route_changes: dict[str, Change] = {}
    for change in plan.changes:
        if isinstance(change.step, RetireContainer):
            continue  # the end of a switch: the service's own row says how it went
        if change.subject in (Subject.SERVICE, Subject.GATEWAY) and change.service:
            changes.setdefault((change.sandbox, change.service), change)
        elif change.subject is Subject.ROUTES:
            route_changes[change.sandbox] = change
    ports = {(a.sandbox, a.service): a.port for a in allocations}
    problems = {p for p in plan.problems}
    rows: list[StatusRow] = []
    for name, sandbox in sorted(sandboxes.items()):
        sandbox_rows: list[StatusRow] = []
        blocked = name in plan.blocked
        entries: list[tuple[str, str | None, str | None]] = [
            (s.name, s.spec.branch, s.spec.target) for s in sandbox.services.values()
        ]
        if sandbox.gateway is not None:
            entries.append((GATEWAY, sandbox.gateway.spec.branch, None))
        for service, branch, target in entries:
            entry = sandbox.services.get(service)
            if entry is not None and not entry.spec.deployed:
                route = "target" if target else "ocp"
                sandbox_rows.append(StatusRow(
                    sandbox=name, service=service, node=None, sync=Sync.IN_SYNC,
                    health=Health.HEALTHY,
                    reason=Reason.ROUTED_TO_TARGET if target else Reason.ROUTED_TO_OCP,
                    url=target, route=route,
                ))
                continue
            placement = placements.get((name, service))
            node = placement.node if placement else None
            observed = _observed(world, node, world.names.container(name, service))
            planned = changes.get((name, service))
            port = ports.get((name, service))
            url = None
            if node is not None and port is not None:
                view = world.nodes[node].node
                url = f"http://{view.public_address if service == GATEWAY else view.address}" \
                      f":{port}"
            previous = observed.labels.get(LABEL_COMMIT) if observed else None
            attempted = planned.detail.commit if planned else previous
            health, reason, why = _health_of(observed, world, node)
            row = StatusRow(
                sandbox=name, service=service, node=node, sync=Sync.IN_SYNC,
                health=health, reason=reason, message=why, branch=branch,
                attempted_commit=attempted, applied_commit=previous, port=port, url=url,
                route="sandbox" if service != GATEWAY else None,
            )
            if blocked:
                row = _replace(row, sync=Sync.OUT_OF_SYNC, reason=Reason.STATE_PROBLEM,
                               message="; ".join(p.message for p in sorted(problems)
                                                 if p.location.file == sandbox.file)
                               or "left as is this pass")
            elif sandbox.suspended:
                row = _replace(row, health=Health.SUSPENDED,
                               reason=Reason.EXPIRED if sandbox.suspended_because
                               else Reason.SUSPENDED,
                               message=sandbox.suspended_because or "")
            elif planned is not None and outcome is not None:
                result = outcome.results.get(planned.step_id)
                if result is not None and result.ok:
                    applied = planned.detail.commit or previous
                    row = _replace(row, health=Health.HEALTHY, reason=_applied_reason(
                        planned.action), applied_commit=applied,
                        message=planned.reason)
                else:
                    reason, why = _failed_result(result) if result else (
                        Reason.DEPLOY_FAILED, outcome.errors.get(planned.step_id, ""))
                    row = _replace(
                        row, sync=Sync.OUT_OF_SYNC, reason=reason,
                        health=Health.DEGRADED if observed is not None and observed.state ==
                        "running" else Health.UNHEALTHY, message=why,
                    )
            elif planned is not None:
                row = _replace(row, sync=Sync.OUT_OF_SYNC, reason=Reason.CHANGES_PENDING,
                               health=Health.PROGRESSING, message=planned.reason)
            failure = _failure(world, node, world.names.container(name, service)) \
                if planned is None and not blocked and not sandbox.suspended else None
            if failure is not None and failure.commit != previous:
                row = _replace(
                    row, sync=Sync.OUT_OF_SYNC, reason=failure.reason.value,
                    health=Health.DEGRADED if observed is not None and observed.state == "running"
                    else Health.UNHEALTHY, attempted_commit=failure.commit,
                    message=failure_message(
                        f"commit {failure.commit[:7]}: {failure.message}",
                        failure.health_answer, failure.log_tail, remembered=True),
                )
            routes = route_changes.get(name) if service == GATEWAY else None
            if routes is not None and not blocked and row.sync == Sync.IN_SYNC:
                result = outcome.results.get(routes.step_id) if outcome else None
                if outcome is None:
                    row = _replace(row, sync=Sync.OUT_OF_SYNC, reason=Reason.CHANGES_PENDING,
                                   health=Health.PROGRESSING, message=routes.reason)
                elif result is None or not result.ok:
                    why = result.message if result else outcome.errors.get(routes.step_id, "")
                    row = _replace(row, sync=Sync.OUT_OF_SYNC, reason=Reason.ROUTES_FAILED,
                                   health=Health.DEGRADED, message=why)
            if service == GATEWAY and not _serves(sandbox, planned, outcome, observed):
                row = _replace(row, url=None)
            sandbox_rows.append(row)
        if data is not None:
            sandbox_rows += data_rows(sandbox, data=data, plan=plan, outcome=outcome, world=world)
        rows.extend(sandbox_rows)
        rows.append(_sandbox_row(name, sandbox, sandbox_rows, blocked))
    return rows


def _serves(sandbox: ResolvedSandbox, planned: Change | None, outcome: ApplyOutcome | None,
            observed: ObservedContainer | None) -> bool:
    """Whether the gateway answers after this pass, so that its URL is worth giving: not when
    the sandbox is suspended, nor when no container runs (none deployed yet, a failed first
    deploy, stopped)."""
    if sandbox.suspended:
        return False
    if planned is not None and outcome is not None:
        result = outcome.results.get(planned.step_id)
        if result is not None and result.ok:
            return planned.action is not Action.STOP
    return observed is not None and observed.state == "running"


def held_rows(held: dict[str, tuple[str, ...]], world: World) -> list[StatusRow]:
    """Rows of sandboxes left as they run because a change to them is not authorised
    (``held``: sandbox -> refusal lines): what their containers run, as the nodes report it,
    and the refusals as the reason."""
    rows: list[StatusRow] = []
    for name, refusals in sorted(held.items()):
        message = "; ".join(refusals) or "a change to it is not authorised"
        sandbox_rows: list[StatusRow] = []
        for node, view in sorted(world.nodes.items()):
            containers = view.observation.containers if view.observation else []
            for container in sorted(containers, key=lambda c: c.name):
                if container.aside or container.labels.get(LABEL_SANDBOX) != name:
                    continue
                service = container.labels.get(LABEL_SERVICE, "")
                port = container.labels.get(LABEL_PORT)
                address = view.node.public_address if service == GATEWAY else view.node.address
                health, _reason, why = _health_of(container, world, node)
                sandbox_rows.append(StatusRow(
                    sandbox=name, service=service, node=node, sync=Sync.OUT_OF_SYNC, health=health,
                    reason=Reason.UNAUTHORISED, message=message if not why else f"{message}; {why}",
                    branch=container.labels.get(LABEL_BRANCH),
                    attempted_commit=container.labels.get(LABEL_COMMIT),
                    applied_commit=container.labels.get(LABEL_COMMIT),
                    port=int(port) if port and port.isdigit() else None,
                    url=f"http://{address}:{port}" if port and address and (
                        service != GATEWAY or container.state == "running") else None,
                    route="sandbox" if service != GATEWAY else None,
                ))
        rows += sandbox_rows
        # nothing of it runs: on purpose
        health = _worst((r.health for r in sandbox_rows), Health.SUSPENDED)
        gateway = next((r for r in sandbox_rows if r.service == GATEWAY), None)
        rows.append(StatusRow(sandbox=name, service="", node=None, sync=Sync.OUT_OF_SYNC,
                              health=health, reason=Reason.UNAUTHORISED, message=message,
                              url=gateway.url if gateway else None))
    return rows


def retired_rows(retired: dict[str, str]) -> list[StatusRow]:
    return [StatusRow(sandbox=name, service="", node=None, sync=Sync.IN_SYNC,
                      health=Health.SUSPENDED, reason=Reason.RETIRED, message=message)
            for name, message in retired.items()]


def _sandbox_row(name: str, sandbox: ResolvedSandbox, rows: list[StatusRow],
                 blocked: bool) -> StatusRow:
    sync = Sync.IN_SYNC if all(r.sync == Sync.IN_SYNC for r in rows) else Sync.OUT_OF_SYNC
    health = _worst((r.health for r in rows), Health.HEALTHY)
    if sandbox.suspended:
        health = Health.SUSPENDED
    failing = [r for r in rows if r.sync != Sync.IN_SYNC] or [
        r for r in rows
        if r.health in (Health.DEGRADED, Health.UNHEALTHY) and not sandbox.suspended]
    reason = failing[0].reason if failing else (
        (Reason.EXPIRED if sandbox.suspended_because else Reason.SUSPENDED)
        if sandbox.suspended else Reason.UP_TO_DATE)
    message = "; ".join(f"{r.service}: {r.message}" for r in failing if r.message) or (
        sandbox.suspended_because or "")
    gateway = next((r for r in rows if r.service == GATEWAY), None)
    return StatusRow(
        sandbox=name, service="", node=None, sync=sync, health=health, reason=reason,
        message=message, url=gateway.url if gateway else None,
        route=",".join(sandbox.templates) or None,
    )


def _replace(row: StatusRow, **values: object) -> StatusRow:
    return replace(row, **values)
