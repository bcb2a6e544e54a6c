"""One reconcile pass: load → observe → place → resolve heads → allocate ports → desire → plan
→ apply.

The I/O shell around the pure planner. ``prepare`` gathers everything the planner needs and
computes the plan (``sdp-reconcile plan`` stops there); ``run`` then writes new port
allocations, applies the plan through the agents, releases the ports of containers a node
confirmed removed, and records status. Safety: an invalid state applies nothing; a pass that
would remove more than half of what this installation runs refuses unless allowed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import Struct, field

from sdp_node.naming import GATEWAY
from sdp_node.protocol import (
    LABEL_SANDBOX,
    LABEL_SERVICE,
    Credentials,
    DeployService,
    DrainContainer,
    OperationEvent,
    RetireContainer,
)
from sdp_reconciler.access.enforcement import Enforcement, audit_refusals, enforce, record
from sdp_reconciler.apply.applying import Applier, ApplyOutcome
from sdp_reconciler.apply.expirywarn import due_notices
from sdp_reconciler.apply.notify import Notifier, finished_notices, started_notices
from sdp_reconciler.apply.portsfile import write_ports_file
from sdp_reconciler.apply.samples import sample_rows
from sdp_reconciler.apply.status import (
    failure_message,
    held_rows,
    retired_rows,
    status_rows,
)
from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History, Retention
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.observe.agents import pinned_client
from sdp_reconciler.observe.node_client import NodeClient
from sdp_reconciler.observe.observing import (
    check_installation,
    gateway_commit_routes,
    observe_nodes,
    resolve_heads,
)
from sdp_reconciler.planner.dataplanning import DesiredDataSet, Reset, desired_data
from sdp_reconciler.planner.desired import DesiredState, Restart, desire
from sdp_reconciler.planner.expiry import ExpiryWarning, apply_expiry, expiry_warnings
from sdp_reconciler.planner.placement import Placement, place
from sdp_reconciler.planner.plan import Action, Change, Plan
from sdp_reconciler.planner.planning import plan
from sdp_reconciler.planner.ports import (
    NO_FREE_PORT,
    allocate,
    follow_switches,
    release,
    same_allocations,
)
from sdp_reconciler.planner.world import Allocation, World
from sdp_reconciler.redaction import SECRETS
from sdp_reconciler.state.gitinfo import Authorship, StateRepository, last_change
from sdp_reconciler.state.hostconfig import HostConfig, require_host_config
from sdp_reconciler.state.loading import PORTS_FILE, LoadedState, load_state
from sdp_reconciler.state.resolve import ResolvedSandbox, resolve_all

if TYPE_CHECKING:  # ssh-keygen's wrapper loads only when signatures are checked
    from sdp_reconciler.access.signatures import SignatureVerifier
    from sdp_reconciler.planner.scope import Scope  # a webhook's pass (cli.watch) makes one

Report = Callable[[str], None]


class Prepared(Struct):
    state: LoadedState
    sandboxes: dict[str, ResolvedSandbox]
    """the sandboxes planned this pass (expired ones suspended; retired ones left out)"""
    retired: dict[str, str]
    world: World
    placements: dict[tuple[str, str], Placement]
    allocations: list[Allocation]
    data: DesiredDataSet
    """every sandbox's data services this pass (their passwords registered for redaction)"""
    desired: DesiredState
    """one value per thing a node should run (``planner.desired``), built once this pass"""
    plan: Plan
    clients: dict[str, NodeClient]
    credentials: Credentials | None
    host: HostConfig
    redactor: Callable[[str], str]
    """every secret this process resolved (``redaction.SECRETS``)"""
    scope: Scope | None = None
    """a pass limited to these sandboxes and nodes (a webhook's); None: everything"""
    access: Enforcement = field(default_factory=lambda: Enforcement(decision=None))
    held: frozenset[str] = frozenset()
    """sandboxes left as they run: a change to them is not authorised (access.yaml)"""
    again: Callable[[], Prepared] | None = None
    """prepare once more with the same inputs (``run``'s second round)"""
    warnings: list[ExpiryWarning] = field(default_factory=list)
    """expiry warnings due this pass (sent once each by ``run``)"""

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class PassResult(Struct):
    prepared: Prepared
    outcome: ApplyOutcome = field(default_factory=ApplyOutcome)
    refused: str | None = None
    follow_up: PassResult | None = None
    """the second round, planned after this round's removals freed ports that sandboxes of
    this round waited for"""

    @property
    def plan(self) -> Plan:
        return self.prepared.plan

    @property
    def rounds(self) -> list[PassResult]:
        return [self, *(self.follow_up.rounds if self.follow_up else [])]

    @property
    def final(self) -> PassResult:
        return self.rounds[-1]

    @property
    def converged(self) -> bool:
        if self.follow_up is not None:
            return self.follow_up.converged
        plan = self.prepared.plan
        all_ok = all(self.outcome.ok(c) for c in plan.changes)
        return self.refused is None and not plan.problems and all_ok and not any(
            v.unreachable for v in self.prepared.world.nodes.values())


def activity(state: LoadedState, sandboxes: dict[str, ResolvedSandbox],
             history: History | None) -> dict[str, datetime]:
    """When each sandbox with an expiry last saw activity: its file's last change or deploy."""
    wanted = [name for name, s in sandboxes.items() if s.lifecycle.expire_after is not None]
    if not wanted:
        return {}
    deploys = history.last_deploys() if history is not None else {}
    repository = StateRepository(state.root)
    try:
        out = {}
        for name in wanted:
            path = state.sandboxes[name].path
            times = [t for t in (last_change(repository, path), deploys.get(name)) if t]
            if times:
                out[name] = max(times)
        return out
    finally:
        repository.close()


def prepare(
    state_dir: Path, *, env: Mapping[str, str] | None = None,
    restarts: frozenset[Restart] = frozenset(), resets: frozenset[Reset] = frozenset(),
    report: Report = lambda _m: None,
    client_timeout: float = 30.0, history: History | None = None,
    now: datetime | None = None, verifier: SignatureVerifier | None = None,
    scope: Scope | None = None,
) -> Prepared:
    """Everything the planner needs, and the plan. With ``scope``, only its sandboxes are
    planned and only its nodes observed: every other sandbox is left exactly as it is."""
    env = os.environ if env is None else env
    host = require_host_config(env)
    state = load_state(state_dir, host=host.rules(env))
    # Who may change what is judged before anything is asked of a node (docs/access.md).
    access = enforce(state.root, has_access_file=state.access is not None, history=history,
                     verifier=verifier)
    for note in access.notes:
        report(note)
    everything = resolve_all(state)
    if scope is not None:
        everything = {n: s for n, s in everything.items() if n in scope.sandboxes}
    moment = now or datetime.now(UTC)
    last_activity = activity(state, everything, history)
    sandboxes, retired = apply_expiry(everything, last_activity, moment)
    files = {n: d.path.relative_to(state.root).as_posix() for n, d in state.sandboxes.items()
             if d.path.is_relative_to(state.root)}
    warnings = expiry_warnings(sandboxes, last_activity, moment, files)
    key = creds.spec_key(host, env)
    nodes = [n for n in state.nodes.model.nodes if scope is None or n.name in scope.nodes]
    clients: dict[str, NodeClient] = {}
    try:
        for node in nodes:
            clients[node.name] = pinned_client(host, node.name, env, timeout=client_timeout)
        views = check_installation(observe_nodes(nodes, clients, timeout=client_timeout),
                                   state.nodes.model.installation,
                                   state.nodes.model.resource_prefix)
        for name, view in sorted(views.items()):
            if view.unreachable:
                report(f"node {name}: unreachable ({view.unreachable})")
        names = state.nodes.model.names
        observed_sandboxes = {
            c.labels.get(LABEL_SANDBOX, "") for v in views.values() if v.observation
            for c in v.observation.containers}
        held = access.everything_held(set(everything) | observed_sandboxes - {""})
        if scope is not None:  # the others are out of this pass's reach anyway (``only``)
            held = frozenset(held & scope.sandboxes)
        sandboxes = {n: s for n, s in sandboxes.items() if n not in held}
        retired = {n: why for n, why in retired.items() if n not in held}
        access_problems = access.problems({n: s.file for n, s in everything.items()})
        world = World(installation=state.nodes.model.installation, spec_key=key, nodes=views,
                      names=names)
        placements, problems = place(
            sandboxes, world, state.ports.model.allocations if state.ports else ())
        credentials = None
        heads: dict[str, dict[str, str]] = {}
        head_errors: dict[str, str] = {}
        if placements:
            credentials = creds.git_credentials(env)
            heads, head_errors = resolve_heads(placements.values(), views, clients, credentials,
                                               report=report, source=creds.source(env))
        committed = gateway_commit_routes(sandboxes, placements, heads, views, clients,
                                          credentials, report=report)
        environments, environment_errors = creds.resolve_environments(state, env)
        world = World(
            installation=world.installation, spec_key=key, nodes=views, names=names, heads=heads,
            head_errors=head_errors, environments=environments,
            environment_errors=environment_errors, committed_routes=committed,
            service_url_variable=state.nodes.model.service_url_variable,
            health_rules=state.nodes.model.health,
        )
        existing = state.ports.model.allocations if state.ports else []
        allocations, port_problems = allocate(
            sandboxes=sandboxes, placements=placements, existing=existing,
            world=world, now=datetime.now(UTC),
        )
        if scope is not None:  # the other sandboxes keep their ports as they are
            allocations = scope.allocations(allocations, existing)
        data = desired_data(sandboxes, world)
        SECRETS.add(*data.passwords())  # derived here; handed to the containers only
        # What each node should run, built once: the plan compares it with what runs.
        desired = desire(
            sandboxes=sandboxes, world=world, placements=placements, allocations=allocations,
            problems=[*access_problems, *problems, *port_problems], restarts=restarts,
            held=held, data=data,
        )
        the_plan = plan(
            sandboxes=sandboxes, world=world, placements=placements, allocations=allocations,
            retired=retired, held=held, resets=resets,
            only=scope.sandboxes if scope is not None else None, desired=desired,
        )
    except BaseException:
        for client in clients.values():
            client.close()
        raise
    def again() -> Prepared:
        # Restarts were done by the first round: the second one must not repeat them.
        return prepare(state_dir, env=env, report=report,
                       client_timeout=client_timeout, history=history, now=now,
                       verifier=verifier, scope=scope)

    return Prepared(
        state=state, sandboxes=sandboxes, retired=retired, world=world, placements=placements,
        allocations=allocations, data=data, desired=desired, plan=the_plan, clients=clients,
        credentials=credentials, redactor=SECRETS, host=host, access=access, held=held,
        again=again, warnings=warnings, scope=scope,
    )


def prune_refusal(prepared: Prepared) -> str | None:
    """Why this plan removes too much to apply without --allow-prune, or None."""
    running = [
        c for v in prepared.world.nodes.values() if v.observation
        for c in v.observation.containers if not c.aside
    ]
    # A switch's retire of its previous instance replaces a container, and a move's drain
    # moves one to another node: neither removes anything.
    removals = [c for c in prepared.plan.changes
                if c.action is Action.REMOVE and c.subject.is_container
                and not isinstance(c.step, RetireContainer | DrainContainer)]
    if not running or len(removals) * 2 <= len(running):
        return None
    sandboxes = sorted({c.sandbox for c in removals})
    return (
        f"this pass would remove {len(removals)} of the {len(running)} containers this "
        f"installation runs (sandboxes: {', '.join(sandboxes)}). An empty or mistyped state "
        "directory looks like this; if the removal is intended, run again with --allow-prune"
    )


def run(
    prepared: Prepared, *, history: History, mode: str, allow_prune: bool = False,
    report: Report = lambda _m: None,
    progress: Callable[[Change, OperationEvent], None] | None = None,
    env: Mapping[str, str] | None = None,
    lease_wait: float | None = None, trigger: str | None = None,
) -> PassResult:
    """Apply the plan; ``trigger`` (what started the pass) is recorded with it."""
    state = prepared.state
    runner = creds.runner(env)
    repository = StateRepository(state.root)
    result = PassResult(prepared=prepared)
    pass_id = history.start_pass(mode=mode, runner=runner, state_revision=repository.revision,
                                 trigger=trigger)
    notifier: Notifier | None = None
    try:
        ports_path = state.root / PORTS_FILE
        existing = state.ports.model.allocations if state.ports else []
        if not same_allocations(prepared.allocations, existing):
            write_ports_file(ports_path, prepared.allocations)
        refusal = None if allow_prune else prune_refusal(prepared)
        if refusal is not None:
            result.refused = refusal
            history.finish_pass(pass_id, status="REFUSED", summary=refusal)
            return result

        def authorship(sandbox: str) -> Authorship:
            document = state.sandboxes.get(sandbox)
            if document is None:  # a removed sandbox: its file is gone
                return Authorship(author=None, uncommitted=False)
            return repository.authorship(document.path)

        notifier = Notifier(
            state.notifications.model.notifications if state.notifications else [],
            root=state.root, env=env, redactor=prepared.redactor, policy=state.host.policy,
            report=report,
        )
        # A sandbox this pass deploys to sees activity now: its expiry moves, no warning.
        deploying = {c.sandbox for c in prepared.plan.changes
                     if c.action not in (Action.REMOVE, Action.STOP)}
        notifier.send(due_notices([w for w in prepared.warnings if w.sandbox not in deploying],
                                  history, report))
        notifier.send(started_notices(prepared.plan))
        def applier(round_: Prepared) -> Applier:
            return Applier(
                clients=round_.clients, history=history, pass_id=pass_id, runner=runner,
                credentials=round_.credentials, redactor=round_.redactor,
                authorship=authorship, grant=round_.access.grant, progress=progress,
                **({"lease_wait": lease_wait} if lease_wait is not None else {}),
            )

        result.outcome = applier(prepared).run(prepared.plan)
        remaining = _release_removed(prepared, result.outcome, ports_path)
        last, last_remaining = result, remaining
        if remaining != prepared.allocations and waits_for_ports(prepared.plan) \
                and prepared.again is not None:
            # A removal confirmed this round freed ports that sandboxes of this round waited
            # for: plan those now rather than one pass later.
            report("ports freed by removals: planning the sandboxes that waited for one")
            again = prepared.again()
            follow = PassResult(prepared=again)
            result.follow_up = follow
            if not same_allocations(again.allocations, again.state.ports.model.allocations
                                    if again.state.ports else []):
                write_ports_file(ports_path, again.allocations)
            follow.refused = None if allow_prune else prune_refusal(again)
            if follow.refused is None:
                notifier.send(started_notices(again.plan))
                follow.outcome = applier(again).run(again.plan)
                last_remaining = _release_removed(again, follow.outcome, ports_path)
            else:
                last_remaining = again.allocations
            last = follow
        final = last.prepared
        rows = status_rows(
            sandboxes=final.sandboxes, plan=final.plan, outcome=last.outcome,
            world=final.world, placements=final.placements, allocations=last_remaining,
            data=final.data,
        )
        rows += retired_rows(final.retired)
        rows += held_rows({name: final.access.refusals_of(name) or final.access.halted
                           for name in final.held
                           if final.state.sandboxes.get(name) is not None
                           or _runs(final.world, name)}, final.world)
        urls = {r.sandbox: r.url for r in rows if r.service == GATEWAY and r.url}

        for round_ in result.rounds:
            if round_.refused is not None:
                continue

            def failure(change: Change, outcome: ApplyOutcome = round_.outcome) -> str:
                found = outcome.results.get(change.step_id)
                if found is None:
                    return outcome.errors.get(change.step_id, "")
                if found.reason is None:
                    return found.message
                return f"{found.reason.value}: " + prepared.redactor(failure_message(
                    found.message, found.health_answer, found.output_tail))

            notifier.send(finished_notices(round_.plan, round_.outcome.ok, failure, urls))
        known = set(final.sandboxes) | set(final.retired) | {r.sandbox for r in rows}
        history.set_status(rows, sandboxes=known)
        history.record_samples(sample_rows(prepared.world))
        if prepared.scope is None:  # a scoped pass knows nothing of the others
            history.forget_sandboxes_except(known)
        status = "CONVERGED" if result.converged else "NOT_CONVERGED"
        audit_refusals(history, prepared.access, runner=runner)
        record(history, prepared.access)
        history.finish_pass(pass_id, status=status,
                            summary="; then ".join(r.plan.summary() for r in result.rounds))
        settings = prepared.host.model.history
        history.prune(Retention(deployments_days=settings.retention_days,
                                audit_days=settings.audit_retention_days))
        return result
    except BaseException as e:
        history.finish_pass(pass_id, status="ERROR", summary=prepared.redactor(str(e)))
        raise
    finally:
        if result.follow_up is not None:
            result.follow_up.prepared.close()
        if notifier is not None:
            notifier.close()
        repository.close()


def waits_for_ports(plan: Plan) -> bool:
    """Whether some sandbox of ``plan`` was held back for want of a free port."""
    return any(p.message.startswith(NO_FREE_PORT) for p in plan.problems)


def _release_removed(prepared: Prepared, outcome: ApplyOutcome, ports_path: Path
                     ) -> list[Allocation]:
    """The allocations without those whose containers a node confirmed removed (written)."""
    removed = {
        (c.sandbox, c.service) for c in prepared.plan.changes
        if c.action is Action.REMOVE and c.subject.is_container and c.service
        and outcome.ok(c) and not isinstance(c.step, RetireContainer | DrainContainer)
    }  # a moved service's allocation is on its new node already
    # A switched service serves on its new port: its allocation follows it this pass.
    switched = {
        (c.sandbox, c.service): c.step.spec.port for c in prepared.plan.changes
        if isinstance(c.step, DeployService) and c.service and outcome.ok(c)
    }
    remaining = follow_switches(release(prepared.allocations, removed), switched,
                                now=datetime.now(UTC))
    if remaining != prepared.allocations:
        write_ports_file(ports_path, remaining)
    return remaining


def _runs(world: World, sandbox: str) -> bool:
    return any(c.labels.get(LABEL_SANDBOX) == sandbox for v in world.nodes.values()
               if v.observation for c in v.observation.containers)


def restart_targets(prepared: Prepared, sandbox: str, service: str | None) -> None:
    """Check that ``restart SANDBOX [SERVICE]`` names something that runs."""
    if sandbox not in prepared.sandboxes:
        known = ", ".join(sorted(prepared.sandboxes)) or "none"
        raise SdpError(f"no sandbox {sandbox!r} in the state (sandboxes: {known})")
    running = {
        c.labels.get(LABEL_SERVICE) for v in prepared.world.nodes.values() if v.observation
        for c in v.observation.containers if c.labels.get(LABEL_SANDBOX) == sandbox
    }
    if service is not None and service not in running:
        raise SdpError(
            f"sandbox {sandbox!r} runs no container for {service!r} (it runs: "
            f"{', '.join(sorted(s for s in running if s)) or 'nothing'})"
        )


def reset_targets(prepared: Prepared, sandbox: str, entry: str) -> None:
    """Check that ``reset SANDBOX ENTRY`` names a PostgreSQL entry this pass re-clones."""
    resolved = prepared.sandboxes.get(sandbox)
    if resolved is None:
        known = ", ".join(sorted(prepared.sandboxes)) or "none"
        raise SdpError(f"no sandbox {sandbox!r} in the state (sandboxes: {known})")
    data = resolved.data.get(entry)
    if data is None or data.entry.source is None:
        entries = ", ".join(f"{n} ({d.entry.kind.value})" for n, d in resolved.data.items())
        raise SdpError(
            f"sandbox {sandbox!r} has no PostgreSQL data entry {entry!r} to re-clone "
            f"(its data: {entries or 'none'})")
    if resolved.suspended:
        raise SdpError(f"sandbox {sandbox!r} is suspended: resume it to re-clone {entry!r}")
    if not any(c.sandbox == sandbox and c.service == entry and c.subject.is_data
               for c in prepared.plan.changes):
        why = "; ".join(str(p) for p in prepared.plan.problems) or "nothing planned"
        raise SdpError(f"{entry!r} of sandbox {sandbox!r} cannot be re-cloned this pass: {why}")
