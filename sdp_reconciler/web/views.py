"""What the pages show, computed from history rows and the state: pure functions, no I/O.

* ``sandbox_summaries``: one ``SandboxSummary`` per sandbox (the state's and the status
  table's), with sync and health, the gateway URL, and each service's branch, commit, port
  and route (sandbox, OCP or a target URL).
* ``deployment_views``: each deployment with its stages as the agent named them (``git
  fetch`` … ``routes``), each ``running``, ``done`` or ``failed``, and its final state
  (RUNNING, FAILED with the reason, …). ``static/page.js`` applies the same rules to events
  arriving live, so a page rendered here and one updated in the browser look the same.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct, field

from sdp_node.naming import GATEWAY
from sdp_reconciler.state.resolve import ResolvedSandbox
from sdp_reconciler.statuses import Health

Row = dict[str, Any]
UNKNOWN = "Unknown"


class ServiceLine(Struct):
    service: str
    route: str
    """``sandbox``, ``ocp`` or ``target`` (the gateway's own line: ``gateway``)."""
    branch: str | None = None
    commit: str | None = None
    attempted: str | None = None
    port: int | None = None
    node: str | None = None
    url: str | None = None
    sync: str = UNKNOWN
    health: str = UNKNOWN
    reason: str = ""
    message: str = ""

    @property
    def route_label(self) -> str:
        return {"sandbox": "sandbox", "ocp": "OCP", "target": "target",
                "gateway": "gateway"}.get(self.route, self.route)


class SandboxSummary(Struct):
    name: str
    sync: str = UNKNOWN
    health: str = UNKNOWN
    reason: str = "NotReconciledYet"
    message: str = ""
    gateway_url: str | None = None
    templates: list[str] = field(default_factory=list)
    suspended: bool = False
    in_state: bool = True
    reconciled: bool = False
    gateway: ServiceLine | None = None
    services: list[ServiceLine] = field(default_factory=list)
    updated_at: str | None = None


def _line_from_row(row: Row) -> ServiceLine:
    route = row["route"] or ("gateway" if row["service"] == GATEWAY else "sandbox")
    return ServiceLine(
        service=row["service"], route=route, branch=row["branch"],
        commit=row["applied_commit"], attempted=row["attempted_commit"], port=row["port"],
        node=row["node"], url=row["url"], sync=row["sync"], health=row["health"],
        reason=row["reason"], message=row["message"] or "",
    )


def _line_from_state(sandbox: ResolvedSandbox, service: str) -> ServiceLine:
    spec = sandbox.services[service].spec
    if spec.use_ocp:
        return ServiceLine(service=service, route="ocp")
    if spec.target is not None:
        return ServiceLine(service=service, route="target", url=spec.target)
    return ServiceLine(service=service, route="sandbox", branch=spec.branch,
                       attempted=spec.commit, port=spec.port, node=spec.node)


def sandbox_summaries(status: list[Row],
                      sandboxes: dict[str, ResolvedSandbox]) -> list[SandboxSummary]:
    by_sandbox: dict[str, list[Row]] = {}
    for row in status:
        by_sandbox.setdefault(row["sandbox"], []).append(row)
    summaries = []
    for name in sorted(set(by_sandbox) | set(sandboxes)):
        resolved = sandboxes.get(name)
        summary = SandboxSummary(name=name, in_state=resolved is not None)
        if resolved is not None:
            summary.templates = list(resolved.templates)
            summary.suspended = resolved.suspended
            summary.services = [_line_from_state(resolved, s) for s in sorted(resolved.services)]
            if resolved.gateway is not None:
                summary.gateway = ServiceLine(service=GATEWAY, route="gateway",
                                              branch=resolved.gateway.spec.branch,
                                              port=resolved.gateway.spec.port)
        rows = by_sandbox.get(name, [])
        if rows:
            summary.reconciled = True
            lines = {r["service"]: _line_from_row(r) for r in rows if r["service"]}
            for row in rows:
                if row["service"] == "":
                    summary.sync, summary.health = row["sync"], row["health"]
                    summary.reason, summary.message = row["reason"], row["message"] or ""
                    summary.gateway_url = row["url"]
                    summary.updated_at = row["updated_at"]
            summary.gateway = lines.pop(GATEWAY, summary.gateway)
            known = {line.service: line for line in summary.services}
            known.update(lines)
            summary.services = [known[s] for s in sorted(known)]
        if summary.health == Health.SUSPENDED:
            summary.suspended = True
        if not summary.in_state:
            summary.reason = "NotInState"
            summary.message = "no longer in the state directory"
        summaries.append(summary)
    return summaries


class StageView(Struct):
    name: str
    status: str
    """``running``, ``done`` or ``failed``."""
    message: str = ""

    @property
    def mark(self) -> str:
        return {"done": "✓", "failed": "✗"}.get(self.status, "…")


class DeploymentView(Struct):
    id: int
    pass_id: int
    resource: str
    service: str | None
    node: str
    action: str
    reason: str
    state: str
    message: str = ""
    branch: str | None = None
    commit: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    stages: list[StageView] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.completed_at is not None


def apply_event(view: DeploymentView, event: Row) -> None:
    """One event's effect on a deployment (the rule ``page.js`` follows too)."""
    kind, name, stage = event["kind"], event["event"] or "", event["stage"]
    if kind == "event":
        if name == "DEPLOY_FAILED":
            _stage(view, stage or "deploy").status = "failed"
            _stage(view, stage or "deploy").message = event["message"] or ""
        elif name.endswith("_STARTED") and stage:
            _stage(view, stage).status = "running"
        elif name.endswith("_COMPLETED") and stage:
            _stage(view, stage).status = "done"
    elif kind == "state" and event["state"]:
        view.state = event["state"]
        if event["state"] == "FAILED" and event["message"]:
            view.message = event["message"]


def _stage(view: DeploymentView, name: str) -> StageView:
    for stage in view.stages:
        if stage.name == name:
            return stage
    stage = StageView(name=name, status="running")
    view.stages.append(stage)
    return stage


def deployment_views(deployments: list[Row], events: list[Row]) -> list[DeploymentView]:
    views = {
        int(d["id"]): DeploymentView(
            id=int(d["id"]), pass_id=int(d["pass_id"]), resource=d["resource"],
            service=d["service"], node=d["node"], action=d["action"], reason=d["reason"],
            state="QUEUED", branch=d["branch"], commit=d["commit_sha"],
            started_at=d["started_at"], completed_at=d["completed_at"],
        ) for d in deployments
    }
    for event in events:
        view = views.get(int(event["deployment_id"] or 0))
        if view is not None:
            apply_event(view, event)
    for d in deployments:
        view = views[int(d["id"])]
        if d["completed_at"] is not None:
            view.state = d["status"]
            view.message = d["message"] or view.message
    return list(views.values())
