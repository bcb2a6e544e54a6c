"""The plan as a value: changes with actions and reasons, grouped by phase and node; rendering.

A ``Plan`` is what ``planning.plan`` returns and what ``applying`` carries out. It says, for
every change, what (``Action``: create ``+``, update ``~``, recreate ``-/+``, start/stop ``~``,
remove ``-``), on which node, why (a reason a person can act on), and where in the state the
change comes from (``file:line:col``). Changes run in five phases: ``data`` (the sandboxes'
databases, Redis users and vhosts on INFRA nodes), ``services`` (networks and service
containers), ``routes`` (gateways and their route tables, switched only after the services
they point at are confirmed), ``cleanup`` (containers no longer wanted), then
``data-cleanup`` (data services no longer wanted, once their containers are gone). Rendering
and JSON live here too; neither ever includes a secret value (the protocol steps, which carry
them, are never rendered).
"""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum
from typing import Any, assert_never

from msgspec import Struct

from sdp_node.protocol import DeployGateway, SetRoutes, Step
from sdp_reconciler.planner.routetable import RouteKind
from sdp_reconciler.state.locations import Location, Problem


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    RECREATE = "recreate"
    START = "start"
    STOP = "stop"
    REMOVE = "remove"

    @property
    def symbol(self) -> str:
        match self:
            case Action.CREATE:
                return "+"
            case Action.UPDATE | Action.START | Action.STOP:
                return "~"
            case Action.RECREATE:
                return "-/+"
            case Action.REMOVE:
                return "-"
            case _:
                assert_never(self)


class Subject(StrEnum):
    NETWORK = "network"
    SERVICE = "service"
    GATEWAY = "gateway"
    ROUTES = "routes"
    DATABASE = "database"
    REDIS_USER = "redis user"
    RABBITMQ_VHOST = "rabbitmq vhost"
    SOURCE = "source"
    """a PostgreSQL source SDP captured from a sandbox (``snapshot --data``, ``drop-source``)"""

    @property
    def is_data(self) -> bool:
        return self in DATA_SUBJECTS

    @property
    def is_container(self) -> bool:
        return self in (Subject.SERVICE, Subject.GATEWAY)


DATA_SUBJECTS = frozenset({Subject.DATABASE, Subject.REDIS_USER, Subject.RABBITMQ_VHOST})


class Phase(StrEnum):
    DATA = "data"
    SERVICES = "services"
    ROUTES = "routes"
    CLEANUP = "cleanup"
    DATA_CLEANUP = "data-cleanup"


PHASE_ORDER = (Phase.DATA, Phase.SERVICES, Phase.ROUTES, Phase.CLEANUP, Phase.DATA_CLEANUP)


class RouteChoice(Struct, frozen=True):
    """One gateway key's route: the URL wanted, and what to keep if its service fails."""

    key: str
    url: str | None
    """the URL to write; None: the commit's own (OCP) value"""
    kind: RouteKind
    depends_on: str | None = None
    """step id of the service deploy this route waits for"""
    fallback: str | None = None
    """the URL to keep when that deploy fails (None: the commit's own value)"""


class DetailKind(StrEnum):
    NONE = "none"
    DEPLOY = "deploy"
    """a service or gateway container the node should run (also when it is started/stopped)"""
    REMOVAL = "removal"
    """a container that goes"""
    DATA = "data"
    """a data service ensured or re-cloned (``source``, ``clones``)"""
    DATA_DROP = "data-drop"
    """a data service dropped (``source``)"""
    CAPTURE = "capture"
    """a database captured as a source (``captured_from``, ``template``)"""
    SOURCE_DROP = "source-drop"
    """a captured source dropped (``template``)"""


class ChangeDetail(Struct, frozen=True):
    """What a change deploys, removes or makes: for the plan's text and JSON, history and
    notices. Which fields a change has depends on its ``kind``; the others stay None."""

    kind: DetailKind = DetailKind.NONE
    repository: str | None = None
    branch: str | None = None
    commit: str | None = None
    port: int | None = None
    previous_commit: str | None = None
    environment: str | None = None
    source: str | None = None
    """the source a data service is (or was) cloned from"""
    clones: bool = False
    """an ensure that clones a database from ``source`` when it makes it"""
    captured_from: str | None = None
    template: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON ``plan --json`` prints (the same keys, per kind, as it always had)."""
        match self.kind:
            case DetailKind.NONE:
                return {}
            case DetailKind.DEPLOY:
                return {
                    "repository": self.repository, "branch": self.branch, "commit": self.commit,
                    "port": self.port, "previous_commit": self.previous_commit,
                    "environment": self.environment,
                }
            case DetailKind.REMOVAL:
                return {"commit": None, "previous_commit": self.previous_commit}
            case DetailKind.DATA:
                return {"source": self.source, "clones": self.clones}
            case DetailKind.DATA_DROP:
                return {"source": self.source}
            case DetailKind.CAPTURE:
                return {"captured_from": self.captured_from, "template": self.template}
            case DetailKind.SOURCE_DROP:
                return {"template": self.template}
            case _:
                assert_never(self.kind)


NO_DETAIL = ChangeDetail()


class Change(Struct, frozen=True):
    action: Action
    subject: Subject
    phase: Phase
    sandbox: str
    service: str | None
    node: str
    resource: str
    reason: str
    step: Step
    location: Location | None = None
    detail: ChangeDetail = NO_DETAIL
    routes: tuple[RouteChoice, ...] = ()
    after: tuple[str, ...] = ()
    """step ids that must have succeeded first (a switch's retire waits for its deploy and
    the sandbox's routes); when one failed, this change is left for a later pass"""

    @property
    def step_id(self) -> str:
        return self.step.step_id

    def describe(self) -> str:
        detail = self.detail
        match self.subject:
            case Subject.NETWORK:
                what = f"network {self.resource}"
            case Subject.ROUTES:
                what = f"routes of {self.resource}"
            case Subject.SERVICE | Subject.GATEWAY | Subject.DATABASE | Subject.REDIS_USER \
                    | Subject.RABBITMQ_VHOST | Subject.SOURCE:
                what = f"{self.subject.value} {self.resource}"
            case _:
                assert_never(self.subject)
        extra = ""
        if self.subject.is_data and detail.source and self.action in (
                Action.CREATE, Action.RECREATE):
            extra = f" (from {detail.source})"
        if detail.kind is DetailKind.DEPLOY and self.action in (
            Action.CREATE, Action.UPDATE, Action.RECREATE
        ):
            extra = (
                f" ({detail.repository}@{detail.branch} "
                f"{str(detail.commit)[:7]}, port {detail.port})"
            )
        return f"{what} on {self.node}{extra}"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "symbol": self.action.symbol,
            "subject": self.subject.value,
            "phase": self.phase.value,
            "sandbox": self.sandbox,
            "service": self.service,
            "node": self.node,
            "resource": self.resource,
            "reason": self.reason,
            "location": str(self.location) if self.location else None,
            "detail": self.detail.to_json(),
            "routes": {r.key: {"url": r.url, "kind": r.kind} for r in self.routes},
        }


def settle_routes(change: Change, failed: set[str]) -> Step:
    """The step with its route choices settled by the deploys they waited for: each key
    gets its planned URL, or its fallback when the deploy it waited for is in ``failed``.
    The planner made every choice; the applier only says which steps failed."""
    step = change.step
    if isinstance(step, DeployGateway):
        routes: dict[str, str] = {}
        for choice in change.routes:
            url = choice.fallback if choice.depends_on in failed else choice.url
            if url is not None:
                routes[choice.key] = url
        return step.model_copy(update={"routes": routes})
    if isinstance(step, SetRoutes):
        settled = dict(step.routes)
        for choice in change.routes:
            if choice.depends_on in failed:
                if choice.fallback is not None:
                    settled[choice.key] = choice.fallback
                else:
                    settled.pop(choice.key, None)
        return step.model_copy(update={"routes": settled})
    return step


class Plan(Struct, frozen=True):
    changes: tuple[Change, ...]
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    blocked: frozenset[str] = frozenset()
    """sandboxes left alone this pass because of a problem"""
    held: frozenset[str] = frozenset()
    """of those, the ones left as they run because a change to them is not authorised"""

    @property
    def empty(self) -> bool:
        return not self.changes

    def batches(self) -> list[tuple[Phase, str, list[Change]]]:
        """(phase, node, changes) in execution order; nodes sorted within a phase."""
        out = []
        for phase in PHASE_ORDER:
            nodes = sorted({c.node for c in self.changes if c.phase is phase})
            for node in nodes:
                out.append((phase, node, [
                    c for c in self.changes if c.phase is phase and c.node == node
                ]))
        return out

    def nodes(self) -> list[str]:
        return sorted({c.node for c in self.changes})

    def counts(self) -> Counter[Action]:
        return Counter(c.action for c in self.changes)

    def summary(self) -> str:
        counts = self.counts()
        add = counts[Action.CREATE]
        change = counts[Action.UPDATE] + counts[Action.RECREATE] + counts[Action.START] + \
            counts[Action.STOP]
        remove = counts[Action.REMOVE]
        return f"Plan: {add} to create, {change} to change, {remove} to remove."

    def render(self) -> str:
        lines: list[str] = []
        by_sandbox: dict[str, list[Change]] = {}
        for change in self.changes:
            by_sandbox.setdefault(change.sandbox, []).append(change)
        for sandbox in sorted(by_sandbox):
            lines.append(f"sandbox {sandbox}:")
            for change in by_sandbox[sandbox]:
                lines.append(f"  {change.action.symbol:>3} {change.describe()}")
                lines.append(f"        {change.reason}")
                for route in change.routes:
                    target = route.url or "the commit's own value (OCP)"
                    lines.append(f"        {route.key}_url → {target} ({route.kind})")
        for note in self.notes:
            lines.append(f"note: {note}")
        for problem in self.problems:
            lines.append(f"problem: {problem}")
        if self.empty and not self.problems:
            lines.append("No changes. The nodes match the state.")
        else:
            lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "changes": [c.to_json() for c in self.changes],
                "problems": [str(p) for p in self.problems],
                "notes": list(self.notes),
                "held": sorted(self.held),
                "summary": self.summary(),
            },
            indent=2,
        )
