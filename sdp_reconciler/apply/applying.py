"""Carry out a plan on the nodes: leases, phases, live events, history. Thin: no decisions.

* **Lock**: a lease with a time limit on every node the plan touches, taken in name order and
  given back whole if any node refuses; renewed while the plan runs.
* **Phases**: data, services, routes, cleanup, data cleanup; within a phase, one convergence
  plan per node, nodes in parallel. A sandbox whose database, Redis user or vhost failed to be
  made gets none of its services deployed (they would boot without their data), and one whose
  container removal failed keeps its data until a later pass removed it. Before the routes
  phase, the steps of route choices that waited for a service deploy are settled by
  ``planner.plan.settle_routes`` with the failed steps (a failed or held service keeps its
  previous route): the planner chose each URL and its fallback; the applier only reports
  what failed.
  A cleanup change that waits for other steps (``after``: a switch's retire) is left for a
  later pass when one of them failed: the previous instance keeps serving.
* **Recording**: each change becomes a deployment row (with its audit record) when it starts;
  the agent's events are followed live and written as they arrive, redacted once more with the
  values this process knows; nothing is recorded as done before the node confirms it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field
from msgspec.structs import replace

from sdp_node.protocol import (
    Credentials,
    OperationEvent,
    StepResult,
)
from sdp_reconciler.errors import LeaseRefused, SdpError
from sdp_reconciler.history import History
from sdp_reconciler.observe.node_client import NodeClient
from sdp_reconciler.planner.plan import (
    PHASE_ORDER,
    Action,
    Change,
    Phase,
    Plan,
    Subject,
    settle_routes,
)
from sdp_reconciler.state.gitinfo import Authorship

if TYPE_CHECKING:  # a type only: the access judge loads when a pass judges
    from sdp_reconciler.access.decision import Grant

LEASE_SECONDS = float(os.environ.get("SDP_LEASE_SECONDS", "90"))
"""How long a lease lasts unless renewed: a reconciler killed mid-apply blocks others this long."""
Progress = Callable[[Change, OperationEvent], None]


class ApplyOutcome(Struct):
    results: dict[str, StepResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """step id -> why it did not run (node unreachable, operation lost)"""

    def ok(self, change: Change) -> bool:
        result = self.results.get(change.step_id)
        return result is not None and result.ok

    def failed_steps(self) -> set[str]:
        failed = {k for k, r in self.results.items() if not r.ok}
        return failed | set(self.errors)


class Applier:
    def __init__(
        self,
        *,
        clients: dict[str, NodeClient],
        history: History,
        pass_id: int,
        runner: str,
        credentials: Credentials | None,
        redactor: Callable[[str], str],
        authorship: Callable[[str], Authorship],
        grant: Callable[[str, str | None], Grant | None] = lambda _s, _v: None,
        progress: Progress | None = None,
        lease_wait: float = LEASE_SECONDS + 10,
    ) -> None:
        self.clients = clients
        self.history = history
        self.pass_id = pass_id
        self.runner = runner
        self.credentials = credentials
        self.redact = redactor
        self.authorship = authorship
        self.grant = grant
        """the access.yaml grant behind a (sandbox, service)'s content, for the audit row"""
        self.progress = progress
        self._leases: dict[str, str] = {}
        self._holder = f"{runner} pass {pass_id}"
        self._stop_renewing = threading.Event()
        self._lease_wait = lease_wait

    # -- leases -----------------------------------------------------------------------------------

    def acquire(self, nodes: list[str]) -> None:
        """Take every node's lease in name order; on a refusal give all back, wait, retry."""
        deadline = time.monotonic() + self._lease_wait
        delay = 0.2
        while True:
            try:
                self._acquire_all(nodes)
                return
            except LeaseRefused:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _acquire_all(self, nodes: list[str]) -> None:
        for node in sorted(nodes):
            try:
                lease = self.clients[node].acquire_lease(self._holder, LEASE_SECONDS)
            except SdpError as e:
                self.release()
                self._stop_renewing.clear()
                raise LeaseRefused(
                    f"cannot take the lease on node {node}: {e}; nothing was applied"
                ) from e
            self._leases[node] = lease.id

    def release(self) -> None:
        self._stop_renewing.set()
        for node, lease_id in sorted(self._leases.items()):
            with contextlib.suppress(SdpError):  # it expires on its own
                self.clients[node].release_lease(lease_id)
        self._leases.clear()

    def _renew(self) -> None:
        while not self._stop_renewing.wait(LEASE_SECONDS / 3):
            for node, lease_id in list(self._leases.items()):
                with contextlib.suppress(SdpError):  # the apply on that node reports it
                    self.clients[node].renew_lease(lease_id, self._holder, LEASE_SECONDS)

    # -- running ----------------------------------------------------------------------------------

    def run(self, plan: Plan) -> ApplyOutcome:
        outcome = ApplyOutcome()
        if plan.empty:
            return outcome
        self.acquire(plan.nodes())
        renewer = threading.Thread(target=self._renew, name="sdp-lease-renew", daemon=True)
        renewer.start()
        try:
            for phase in PHASE_ORDER:
                batches = [(node, changes) for p, node, changes in plan.batches() if p is phase]
                if phase is Phase.SERVICES:
                    batches = self._hold_without_data(plan, batches, outcome)
                if phase is Phase.DATA_CLEANUP:
                    batches = self._hold_while_containers_remain(plan, batches, outcome)
                if phase is Phase.ROUTES:
                    failed = outcome.failed_steps()
                    batches = [
                        (node, [replace(c, step=settle_routes(c, failed)) for c in changes])
                        for node, changes in batches
                    ]
                if phase is Phase.CLEANUP:
                    # A switch's retire waits for its deploy and its sandbox's routes.
                    failed = outcome.failed_steps()
                    batches = [(node, kept) for node, changes in batches
                               if (kept := [c for c in changes if not failed & set(c.after)])]
                if not batches:
                    continue
                with ThreadPoolExecutor(max_workers=len(batches)) as pool:
                    for node_outcome in pool.map(lambda b: self._run_batch(*b), batches):
                        outcome.results.update(node_outcome.results)
                        outcome.errors.update(node_outcome.errors)
        finally:
            self.release()
            renewer.join(timeout=5)
        return outcome

    def _hold_without_data(self, plan: Plan, batches: list[tuple[str, list[Change]]],
                           outcome: ApplyOutcome) -> list[tuple[str, list[Change]]]:
        """The batches without the service deploys of sandboxes whose data failed; those are
        recorded as not run."""
        return self._hold(
            batches, outcome, failed=_failed_in(plan, outcome, Phase.DATA),
            held=lambda c: c.subject is Subject.SERVICE and c.action is not Action.STOP,
            why=lambda f: f"not deployed: {f.subject.value} {f.resource} of the sandbox could "
            "not be made")

    def _hold_while_containers_remain(
        self, plan: Plan, batches: list[tuple[str, list[Change]]], outcome: ApplyOutcome,
    ) -> list[tuple[str, list[Change]]]:
        """The batches without the drops of sandboxes a container removal failed for: their
        data goes only once their containers are gone (the next pass tries again)."""
        return self._hold(
            batches, outcome, failed=_failed_in(plan, outcome, Phase.CLEANUP),
            held=lambda _c: True,
            why=lambda f: f"not dropped yet: {f.subject.value} {f.resource} of the sandbox "
            "could not be removed")

    def _hold(self, batches: list[tuple[str, list[Change]]], outcome: ApplyOutcome, *,
              failed: dict[str, Change], held: Callable[[Change], bool],
              why: Callable[[Change], str]) -> list[tuple[str, list[Change]]]:
        """``batches`` without the ``held`` changes of sandboxes with a ``failed`` change,
        each recorded as not run with ``why(the failed change)``."""
        if not failed:
            return batches
        kept = []
        for node, changes in batches:
            runs = []
            for change in changes:
                cause = failed.get(change.sandbox)
                if cause is None or not held(change):
                    runs.append(change)
                    continue
                message = why(cause)
                outcome.errors[change.step_id] = message
                self._record_end(change, self._record_start(change), None, message)
            if runs:
                kept.append((node, runs))
        return kept

    def _run_batch(self, node: str, changes: list[Change]) -> ApplyOutcome:
        outcome = ApplyOutcome()
        deployments = {c.step_id: self._record_start(c) for c in changes}
        by_step = {c.step_id: c for c in changes}
        client = self.clients[node]
        try:
            operation = client.apply(
                lease_id=self._leases[node], steps=[c.step for c in changes],
                requested_by=self.runner, credentials=self.credentials,
            )
            for event in client.follow(operation):
                self._record_event(event, by_step, deployments)
                if event.kind == "result" and event.result is not None:
                    outcome.results[event.result.step_id] = event.result
        except SdpError as e:
            message = self.redact(str(e))
            for change in changes:
                if change.step_id not in outcome.results:
                    outcome.errors[change.step_id] = message
                    self._record_end(change, deployments[change.step_id], None, message)
        for change in changes:
            result = outcome.results.get(change.step_id)
            if result is not None:
                self._record_end(change, deployments[change.step_id], result, None)
        return outcome

    # -- recording --------------------------------------------------------------------------------

    def _record_start(self, change: Change) -> int:
        detail = change.detail
        authorship = self.authorship(change.sandbox)
        values: dict[str, Any] = {
            "pass_id": self.pass_id, "step_id": change.step_id, "sandbox": change.sandbox,
            "service": change.service, "node": change.node, "resource": change.resource,
            "action": _action_label(change), "reason": self.redact(change.reason),
            "repository": detail.repository, "branch": detail.branch,
            "commit_sha": detail.commit, "previous_commit": detail.previous_commit,
            "port": detail.port, "environment": detail.environment,
            "author": authorship.author, "uncommitted": int(authorship.uncommitted),
            "runner": self.runner, "status": "QUEUED",
        }
        deployment = self.history.start_deployment(**values)
        self.history.add_event(pass_id=self.pass_id, deployment_id=deployment,
                               sandbox=change.sandbox, kind="state", state="QUEUED",
                               message=f"{_action_label(change)}: {self.redact(change.reason)}")
        return deployment

    def _record_event(self, event: OperationEvent, by_step: dict[str, Change],
                      deployments: dict[str, int]) -> None:
        change = by_step.get(event.step_id or "")
        if change is None or event.kind == "end":
            return
        if self.progress is not None:
            self.progress(change, event)
        message = self.redact(event.message)
        if event.kind == "result" and event.result is not None:
            message = self.redact(event.result.message)
        self.history.add_event(
            pass_id=self.pass_id, deployment_id=deployments[change.step_id],
            sandbox=change.sandbox, at=event.at.isoformat(timespec="milliseconds"),
            kind=event.kind, stage=event.stage.value if event.stage else None,
            event=event.event.value if event.event else None,
            state=event.state.value if event.state else (
                event.result.state.value if event.result else None),
            message=message,
        )
        if event.kind == "state" and event.state is not None:
            self.history.update_deployment(deployments[change.step_id],
                                           status=event.state.value)

    def _record_end(self, change: Change, deployment: int, result: StepResult | None,
                    error: str | None) -> None:
        status = result.state.value if result is not None else "FAILED"
        message = self.redact(result.message if result is not None else error or "")
        if result is not None and result.ok and not result.changed and not message:
            message = "already as asked"
        self.history.update_deployment(
            deployment, status=status, message=message,
            stage=result.stage.value if result is not None and result.stage else None,
            completed_at=_now(),
        )
        if change.subject is Subject.NETWORK:
            return
        authorship = self.authorship(change.sandbox)
        detail = change.detail
        grant = self.grant(change.sandbox, change.service)
        self.history.add_audit(
            state_commit=grant.commit if grant else None,
            permission=str(grant.permission) if grant else None,
            role=str(grant.role) if grant and grant.role else None,
            deployment_id=deployment, user=authorship.author,
            uncommitted=int(authorship.uncommitted), runner=self.runner,
            action=_audit_label(change, result), repository=detail.repository,
            branch=detail.branch, commit_sha=detail.commit,
            environment=detail.environment, sandbox=change.sandbox,
            service=change.service, status="SUCCESS" if result is not None and result.ok
            else "FAILED",
        )


def _audit_label(change: Change, result: StepResult | None) -> str:
    """What the audit says was done: for a data service, whether the ensure really cloned
    (``clone database``) or found it made (``ensure database``)."""
    if not change.subject.is_data:
        return _action_label(change)
    what = change.subject.value
    if change.action is Action.REMOVE:
        return f"drop {what}"
    if change.action is Action.RECREATE:
        return f"reclone {what}"
    made = result is not None and result.changed and change.detail.clones
    return f"clone {what}" if made else f"ensure {what}"


def _failed_in(plan: Plan, outcome: ApplyOutcome, phase: Phase) -> dict[str, Change]:
    """Sandbox -> a change of ``phase`` that failed for it."""
    return {c.sandbox: c for c in plan.changes if c.phase is phase and not outcome.ok(c)}


def _action_label(change: Change) -> str:
    if change.subject is Subject.ROUTES:
        return "routes"
    if change.subject is Subject.SOURCE:
        return "drop source" if change.action is Action.REMOVE else "capture source"
    if change.action is Action.REMOVE:
        return f"remove {change.subject.value}"
    return f"{change.action.value} {change.subject.value}"


def _now() -> str:
    from sdp_reconciler.history import now

    return now()
