"""The planner as a table: (desired, observed) → the plan's rows, with no mocks.

Each case names what the state says (``Desired``) and what the nodes report (an
``InMemoryNodes`` built by a one-line function, most often "converged on an earlier state, then
something happened"), and the plan it expects, in plan order, as (action, subject, resource, a
substring of the reason). Rows use ``Action`` rather than its symbol because ``~`` is shared by
update, start and stop. Cases that also expect problems, blocked sandboxes or notes say so.

After the table: what a single row cannot show (route choices, step contents, secrets never
shown, determinism), then regression tests of the bugs these tables found.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from msgspec import Struct, field
from msgspec.structs import replace

from sdp_node.protocol import (
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    DeployGateway,
    DeployService,
    ObservedContainer,
    SetRoutes,
)
from sdp_reconciler.planner.plan import Action, Phase, Plan, RouteChoice, Subject
from sdp_reconciler.planner.world import NodeView, World
from sdp_reconciler.state.models import GatewaySpec, NodeType, ServiceSpec
from sdp_reconciler.state.sources import Location
from tests.planning.builders import (
    GATEWAY_NODE,
    HEADS,
    INSTALLATION,
    MICRO,
    OCP,
    Desired,
    Row,
    against,
    as_ports_file,
    branch,
    by_name,
    converged,
    desired_spec,
    environment,
    gateway_location,
    go_repository,
    node,
    nodes,
    ocp,
    plan_pass,
    sandbox,
    service_location,
    sha,
    target,
)
from tests.planning.fakes import InMemoryNodes, observed_container

A, S, G, R, N = Action, Subject.SERVICE, Subject.GATEWAY, Subject.ROUTES, Subject.NETWORK
ACCOUNT, GW, NET = "sandbox-qa-account", "sandbox-qa-gateway", "sandbox-qa"
ACCOUNT_URL = "http://10.0.0.1:9001"
OLD, NEW = sha("a1b2c3d"), sha("e4f5a6b")
STAGING = "https://account.staging.company.invalid"
# A running service whose spec changed switches to the lowest spare port of its node; its route
# follows it, and its previous instance goes in the cleanup phase.
SWITCH_ROUTE = (A.UPDATE, R, GW, "account_url http://10.0.0.1:9001→http://10.0.0.1:9002")
SWITCHED_TO_9003 = (A.REMOVE, S, ACCOUNT + "--previous", "switched to port 9003: the previous "
                    "instance (port 9001) drains and goes once the routes moved")
RETIRE = (A.REMOVE, S, ACCOUNT + "--previous", "switched to port 9002: the previous instance "
          "(port 9001) drains")


def qa(**services: ServiceSpec) -> Desired:
    """Sandbox ``qa``: account on main and payment on OCP unless the case says otherwise."""
    return Desired(by_name(sandbox("qa", {"account": branch("main"), "payment": ocp(),
                                          **services})))


BASE = qa()


def heads(**moved: dict[str, str]) -> dict[str, dict[str, str]]:
    return {**HEADS, **moved}


def with_env(variables: dict[str, str], secrets: dict[str, str]) -> Desired:
    """qa with account in environment ``qa-env`` (the gateway has none)."""
    return replace(
        qa(account=branch("main", environment="qa-env")),
        environments={"qa-env": environment("qa-env", variables, secrets)},
    )


ENV = with_env({"DB_HOST": "db-1", "LOG": "debug"}, {"JWT_SECRET": "hunter2-old"})


def base_then(*changes: Callable[[InMemoryNodes], None]) -> InMemoryNodes:
    """Nodes that ran ``BASE`` until ``changes`` happened to them."""
    observed = converged(BASE)
    for change in changes:
        change(observed)
    return observed


def stop(name: str) -> Callable[[InMemoryNodes], None]:
    return lambda observed: observed.stop_by_hand(name)


def remove(name: str) -> Callable[[InMemoryNodes], None]:
    return lambda observed: observed.remove_by_hand(name)


def orphan(observed: InMemoryNodes) -> None:
    ghost = desired_spec(Desired(by_name(sandbox("ghost", {"account": branch("main")}))),
                         "ghost", "account")
    base = observed.nodes[MICRO].labels()
    observed.put(MICRO, observed_container(base, ghost.model_copy(update={"port": 9007}),
                                           image="alpine:3.20", id="ghost"))
    observed.put(MICRO, ObservedContainer(
        name="sandbox-stray", id="stray", labels={
            LABEL_MANAGED: "true", LABEL_INSTANCE: INSTALLATION, LABEL_NODE: MICRO},
        state="exited", status="Exited (0)", image="alpine:3.20",
    ))


def aside(observed: InMemoryNodes) -> None:
    """The previous container of an interrupted replacement, kept aside by the agent."""
    earlier = replace(BASE, heads=heads(account={"main": sha("0a0a0a0")}))
    spec = desired_spec(earlier, "qa", "account")
    observed.put(MICRO, observed_container(
        observed.nodes[MICRO].labels(), spec, image="alpine:3.20", id="aside",
        state="exited", name=ACCOUNT + "--previous"))


def suspended(desired: Desired = BASE) -> Desired:
    return replace(desired, sandboxes={
        name: replace(s, lifecycle=s.lifecycle.model_copy(update={"suspended": True}))
        for name, s in desired.sandboxes.items()})


PINNED = qa(account=branch("main", node=MICRO))


def pinned_unreachable() -> InMemoryNodes:
    observed = converged(PINNED)
    observed.make_unreachable(MICRO)
    return observed


def routes_unreadable(observed: InMemoryNodes) -> None:
    gateways = observed.nodes[GATEWAY_NODE].gateways
    gateways[GW] = gateways[GW].model_copy(update={"problem": "config.php: cannot parse"})


RELEASE = replace(BASE, sandboxes=by_name(sandbox(
    "qa", {"account": branch("main"), "payment": ocp()}, gateway=GatewaySpec(branch="release"))))


class Case(Struct, frozen=True):
    id: str
    desired: Desired
    observed: Callable[[], InMemoryNodes]
    expected: list[Row]
    problems: list[tuple[Location, str]] = field(default_factory=list)
    """(where, a substring of the message) of every problem, in the plan's order"""
    blocked: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)


CASES = [
    Case("new sandbox: network, service, gateway", BASE, nodes, [
        (A.CREATE, N, NET, "the sandbox's services need it"),
        (A.CREATE, S, ACCOUNT, "new sandbox"),
        (A.CREATE, G, GW, "new sandbox"),
    ]),
    Case("nothing changed: nothing to do", BASE, lambda: converged(BASE), []),
    Case("branch moved", replace(BASE, heads=heads(account={"main": NEW})),
         lambda: converged(BASE), [
             (A.UPDATE, S, ACCOUNT, "branch moved a1b2c3d→e4f5a6b"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("branch changed", qa(account=branch("feature/login-error")), lambda: converged(BASE), [
        (A.UPDATE, S, ACCOUNT, "branch changed main→feature/login-error"),
        SWITCH_ROUTE, RETIRE,
    ]),
    Case("pinned commit on the same branch", qa(account=branch("main", commit=NEW)),
         lambda: converged(BASE), [
             (A.UPDATE, S, ACCOUNT, "pinned commit changed a1b2c3d→e4f5a6b"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("branch moved and the gateway's too: both updated, routes unchanged",
         replace(BASE, heads=heads(account={"main": NEW}, erangel={"develop": sha("5ca1ab1")})),
         lambda: converged(BASE), [
             (A.UPDATE, S, ACCOUNT, "branch moved a1b2c3d→e4f5a6b"),
             (A.UPDATE, G, GW, "branch moved 9a7e4a7→5ca1ab1"),
             RETIRE,
         ]),
    Case("env var added", with_env({"DB_HOST": "db-1", "LOG": "debug", "NEW_FLAG": "1"},
                                   {"JWT_SECRET": "hunter2-old"}),
         lambda: converged(ENV), [
             (A.UPDATE, S, ACCOUNT, "spec changed: env NEW_FLAG added"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("env var changed", with_env({"DB_HOST": "db-2", "LOG": "debug"},
                                     {"JWT_SECRET": "hunter2-old"}),
         lambda: converged(ENV), [
             (A.UPDATE, S, ACCOUNT, "spec changed: env DB_HOST"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("env var removed", with_env({"DB_HOST": "db-1"}, {"JWT_SECRET": "hunter2-old"}),
         lambda: converged(ENV), [
             (A.UPDATE, S, ACCOUNT, "spec changed: env LOG removed"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("secret changed: named, never shown",
         with_env({"DB_HOST": "db-1", "LOG": "debug"}, {"JWT_SECRET": "hunter2-new"}),
         lambda: converged(ENV), [
             (A.UPDATE, S, ACCOUNT, "spec changed: secret JWT_SECRET"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("explicit port changed (service redeployed, then its route moves)",
         qa(account=branch("main", port=9005)), lambda: converged(BASE), [
             (A.UPDATE, S, ACCOUNT, "spec changed: port 9001→9005"),
             (A.UPDATE, R, GW, "account_url http://10.0.0.1:9001→http://10.0.0.1:9005"),
         ]),
    Case("resources changed", qa(account=branch("main", resources={"cpu": "500m",
                                                                  "memory": "256Mi"})),
         lambda: converged(BASE), [
             (A.UPDATE, S, ACCOUNT,
              "spec changed: cpu none→500m, memory none→256Mi"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("container removed by hand", BASE,
         lambda: base_then(remove(ACCOUNT)), [
             (A.CREATE, S, ACCOUNT, "drift: container missing (removed by hand?)"),
         ]),
    Case("container stopped by hand", BASE,
         lambda: base_then(stop(ACCOUNT)), [
             (A.START, S, ACCOUNT, "drift: container exited (stopped by hand?)"),
         ]),
    Case("whole sandbox stopped and not suspended: resumed", BASE,
         lambda: base_then(stop(ACCOUNT), stop(GW)), [
             (A.START, S, ACCOUNT, "sandbox resumed"),
             (A.START, G, GW, "sandbox resumed"),
         ]),
    Case("suspended with running containers: stopped", suspended(), lambda: converged(BASE), [
        (A.STOP, S, ACCOUNT, "sandbox suspended"),
        (A.STOP, G, GW, "sandbox suspended"),
    ]),
    Case("suspended with stopped containers: nothing", suspended(),
         lambda: base_then(stop(ACCOUNT), stop(GW)),
         []),
    Case("suspended and a container missing: nothing created", suspended(),
         lambda: base_then(remove(ACCOUNT), stop(GW)),
         []),
    Case("restart requested: every container recreated",
         replace(BASE, restarts=frozenset({("qa", None)})), lambda: converged(BASE), [
             (A.RECREATE, S, ACCOUNT, "restart requested"),
             (A.RECREATE, G, GW, "restart requested"),
             RETIRE,
         ]),
    Case("restart of one service", replace(BASE, restarts=frozenset({("qa", "account")})),
         lambda: converged(BASE), [
             (A.RECREATE, S, ACCOUNT, "restart requested"),
             SWITCH_ROUTE, RETIRE,
         ]),
    Case("service switched from its branch to OCP: routes first, removal after",
         qa(account=ocp()), lambda: converged(BASE), [
             (A.UPDATE, R, GW, "routes changed: account_url http://10.0.0.1:9001→OCP"),
             (A.REMOVE, S, ACCOUNT,
              "service no longer deployed in the sandbox (routed to OCP)"),
             (A.REMOVE, N, NET, "no service of the sandbox runs on this node any more"),
         ]),
    Case("service switched to a target URL", qa(account=target(STAGING)),
         lambda: converged(BASE), [
             (A.UPDATE, R, GW, f"routes changed: account_url http://10.0.0.1:9001→{STAGING}"),
             (A.REMOVE, S, ACCOUNT, f"(routed to target {STAGING})"),
             (A.REMOVE, N, NET, "no service of the sandbox runs on this node any more"),
         ]),
    Case("service switched from OCP to a branch: deployed, then routed, and the other "
         "services told (PAYMENT_URL)",
         qa(payment=branch("main")), lambda: converged(BASE), [
             # account's spec changes (PAYMENT_URL): it switches, to the next spare port
             (A.UPDATE, S, ACCOUNT, "spec changed: env PAYMENT_URL"),
             (A.CREATE, S, "sandbox-qa-payment", "new in the sandbox"),
             (A.UPDATE, R, GW, "routes changed: account_url http://10.0.0.1:9001→"
              "http://10.0.0.1:9003, payment_url OCP→http://10.0.0.1:9002"),
             SWITCHED_TO_9003,
         ]),
    Case("service added to the sandbox", qa(user=branch("main")), lambda: converged(BASE), [
        (A.UPDATE, S, ACCOUNT, "spec changed: env USER_URL"),
        (A.CREATE, S, "sandbox-qa-user", "new in the sandbox"),
        (A.UPDATE, R, GW, "routes changed: account_url http://10.0.0.1:9001→"
         "http://10.0.0.1:9003, user_url OCP→http://10.0.0.1:9002"),
        SWITCHED_TO_9003,
    ]),
    Case("service removed from the sandbox: its key goes back to the commit's value",
         Desired(by_name(sandbox("qa", {"account": branch("main")}))),
         lambda: converged(qa(user=branch("main"))), [
             (A.UPDATE, S, ACCOUNT, "spec changed: env USER_URL"),
             (A.UPDATE, R, GW, "account_url http://10.0.0.1:9001→http://10.0.0.1:9003, "
              "user_url http://10.0.0.1:9002→OCP"),
             SWITCHED_TO_9003,
             (A.REMOVE, S, "sandbox-qa-user", "service removed from the sandbox"),
         ]),
    Case("sandbox deleted", Desired({}), lambda: converged(BASE), [
        (A.REMOVE, G, GW, "sandbox deleted"),
        (A.REMOVE, S, ACCOUNT, "sandbox deleted"),
        (A.REMOVE, N, NET, "sandbox deleted"),
    ]),
    Case("orphans of this installation: unknown sandbox, no sandbox label", BASE,
         lambda: base_then(orphan), [
             (A.REMOVE, S, "sandbox-ghost-account", "sandbox deleted"),
             (A.REMOVE, S, "sandbox-stray", "orphan owned by this installation"),
         ]),
    Case("routes edited by hand on a running gateway", BASE,
         lambda: base_then(lambda o: o.edit_routes_by_hand(
             GW, payment_url="http://10.9.9.9:8000")), [
             (A.UPDATE, R, GW, "drift: config.php routes edited by hand (payment); "
              f"routes changed: payment_url http://10.9.9.9:8000→OCP ({OCP['payment']})"),
         ]),
    Case("a route hand-edited to another key's OCP URL: the edited value is named", BASE,
         lambda: base_then(lambda o: o.edit_routes_by_hand(GW, payment_url=OCP["user"])), [
             (A.UPDATE, R, GW, "drift: config.php routes edited by hand (payment); "
              f"routes changed: payment_url {OCP['user']}→OCP ({OCP['payment']})"),
         ]),
    Case("a key the sandbox does not name, edited by hand: back to the commit's value", BASE,
         lambda: base_then(lambda o: o.edit_routes_by_hand(GW, user_url="http://10.9.9.9:1")), [
             (A.UPDATE, R, GW, "drift: config.php routes edited by hand (user); routes "
              f"changed: user_url http://10.9.9.9:1→OCP ({OCP['user']})"),
         ]),
    Case("a service key missing from the gateway's committed config: a problem",
         RELEASE, lambda: converged(RELEASE, nodes(committed_routes_at={
             sha("7e1ea5e"): {"account": OCP["account"], "user": OCP["user"]}})),
         [], problems=[(service_location("qa", "payment", ["account", "payment"]),
                        "the gateway's erangel at 7e1ea5e has no 'payment_url' in its config")]),
    Case("unknown branch: a problem, the sandbox blocked, its containers left running",
         qa(account=branch("feature/nope")), lambda: converged(BASE), [],
         problems=[(service_location("qa", "account", ["account", "payment"]),
                    "branch 'feature/nope' does not exist in repository account "
                    "(branches: feature/login-error, main)")],
         blocked=frozenset({"qa"})),
    Case("unknown gateway branch: a problem at the gateway's entry",
         replace(BASE, sandboxes=by_name(sandbox("qa", {"account": branch("main")},
                                                 gateway=GatewaySpec(branch="nope")))),
         lambda: converged(BASE), [],
         problems=[(gateway_location("qa"), "branch 'nope' does not exist in repository "
                                            "erangel")],
         blocked=frozenset({"qa"})),
    Case("branch heads unknown this pass: blocked",
         replace(BASE, head_errors={"account": "cannot list the branches of account: 500"}),
         lambda: converged(BASE), [],
         problems=[(service_location("qa", "account", ["account", "payment"]),
                    "cannot list the branches of account")],
         blocked=frozenset({"qa"})),
    Case("unreachable node: blocked, noted, nothing touched", BASE,
         lambda: base_then(lambda o: o.make_unreachable(MICRO, "timed out")), [],
         problems=[(service_location("qa", "account", ["account", "payment"]),
                    "unreachable, so unknown: micro-1")],
         blocked=frozenset({"qa"}), notes=["node micro-1 is unreachable: timed out"]),
    Case("unreachable gateway node: blocked, noted", BASE,
         lambda: base_then(lambda o: o.make_unreachable(GATEWAY_NODE)), [],
         problems=[(gateway_location("qa"), "GATEWAY node gateway-1 is unreachable")],
         blocked=frozenset({"qa"}),
         notes=["node gateway-1 is unreachable: connection refused"]),
    Case("pinned node unreachable: blocked where the sandbox starts and at the service",
         PINNED, pinned_unreachable, [],
         problems=[(Location("state/sandboxes/qa.yaml", 1, 1),
                    "node micro-1 is unreachable; sandbox left as is"),
                   (service_location("qa", "account", ["account", "payment"]),
                    "node micro-1 did not report repository account")],
         blocked=frozenset({"qa"}), notes=["node micro-1 is unreachable: connection refused"]),
    Case("the gateway cannot read its routes: a problem at the gateway, nothing written", BASE,
         lambda: base_then(lambda o: o.edit_routes_by_hand(GW, payment_url="http://x.invalid"),
                           routes_unreadable), [],
         problems=[(gateway_location("qa"), "config.php: cannot parse")]),
    Case("a container kept aside during a replacement is ignored", BASE,
         lambda: base_then(aside), []),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_table(case: Case) -> None:
    result = plan_pass(case.desired, case.observed()).plan
    assert against(result, case.expected) == case.expected, result.render()
    problems = [
        (p.location, next((m for _, m in case.problems if m in p.message), p.message))
        for p in result.problems
    ]
    assert problems == case.problems
    assert result.blocked == case.blocked
    assert list(result.notes) == case.notes


# -- what a row does not show ---------------------------------------------------------------------


def test_rendered_like_terraform_plan() -> None:
    result = plan_pass(qa(account=ocp(), user=branch("main")), converged(BASE)).plan
    lines = result.render().splitlines()
    assert lines[0] == "sandbox qa:"
    assert [line.split()[0] for line in lines[1:] if line.startswith("  ") and
            not line.startswith("        ")] == ["+", "~", "-"]
    assert "        account_url → the commit's own value (OCP) (ocp)" in lines
    assert lines[-1] == "Plan: 1 to create, 1 to change, 1 to remove."
    assert plan_pass(BASE, converged(BASE)).plan.render() == \
        "No changes. The nodes match the state."


def test_new_sandbox_gateway_routes_wait_for_the_service_and_fall_back_to_ocp() -> None:
    result = plan_pass(BASE, nodes()).plan
    account = next(c for c in result.changes if c.resource == ACCOUNT)
    gateway = next(c for c in result.changes if c.resource == GW)
    assert isinstance(gateway.step, DeployGateway)
    assert (gateway.phase, account.phase) == (Phase.ROUTES, Phase.SERVICES)
    assert gateway.routes == (
        RouteChoice("account", ACCOUNT_URL, "sandbox", depends_on=account.step_id,
                    fallback=None),
        RouteChoice("payment", None, "ocp"),
    )
    assert gateway.step.routes == {}, "routes are settled at apply time, not in the plan"


def test_gateway_new_commit_carries_route_choices_with_depends_on_and_previous_route() -> None:
    before = qa(user=target(STAGING))
    moved = replace(before, heads=heads(account={"main": NEW}, erangel={"develop": NEW}))
    result = plan_pass(moved, converged(before)).plan
    account, gateway, retire = result.changes
    assert (account.action, gateway.action, gateway.subject) == (A.UPDATE, A.UPDATE, G)
    assert gateway.reason == "branch moved 9a7e4a7→e4f5a6b"
    assert gateway.routes == (
        # The switched account's new port; its current one if the deploy fails.
        RouteChoice("account", "http://10.0.0.1:9002", "sandbox", depends_on=account.step_id,
                    fallback=ACCOUNT_URL),
        RouteChoice("payment", None, "ocp"),
        RouteChoice("user", STAGING, "target"),
    )
    # The previous account goes only after the deploy and the gateway succeeded.
    assert retire.resource == ACCOUNT + "--previous" and retire.phase is Phase.CLEANUP
    assert retire.after == (account.step_id, gateway.step_id)


def test_gateway_update_without_service_deploys_has_no_dependencies() -> None:
    moved = replace(BASE, heads=heads(erangel={"develop": NEW}))
    (gateway,) = plan_pass(moved, converged(BASE)).plan.changes
    assert [r.depends_on for r in gateway.routes] == [None, None]
    assert gateway.routes[0].fallback == ACCOUNT_URL


def test_route_to_a_new_service_waits_for_its_deploy_and_keeps_ocp_on_failure() -> None:
    result = plan_pass(qa(payment=branch("main")), converged(BASE)).plan
    # account switches too (its PAYMENT_URL changed), to the next spare port
    account, deploy, routes, _retire = result.changes
    assert isinstance(routes.step, SetRoutes)
    assert routes.step.routes == {"account": "http://10.0.0.1:9003",
                                  "payment": "http://10.0.0.1:9002"}
    assert RouteChoice("payment", "http://10.0.0.1:9002", "sandbox", depends_on=deploy.step_id,
                       fallback=OCP["payment"]) in routes.routes
    assert RouteChoice("account", "http://10.0.0.1:9003", "sandbox",
                       depends_on=account.step_id, fallback=ACCOUNT_URL) in routes.routes


def test_switch_to_ocp_sends_concrete_committed_urls() -> None:
    (routes, _, _) = plan_pass(qa(account=ocp()), converged(BASE)).plan.changes
    assert isinstance(routes.step, SetRoutes)
    assert routes.step.routes == {"account": OCP["account"], "payment": OCP["payment"]}


def test_deploy_steps_carry_resolved_commits_spec_hashes_and_final_names() -> None:
    result = plan_pass(replace(BASE, heads=heads(account={"main": NEW})), converged(BASE)).plan
    change, _routes, _retire = result.changes
    assert isinstance(change.step, DeployService)
    spec = change.step.spec
    assert (spec.container, spec.commit, spec.branch, change.step.network, spec.port) == (
        ACCOUNT, NEW, "main", NET, 9002)
    wanted = desired_spec(replace(BASE, heads=heads(account={"main": NEW})), "qa", "account")
    assert spec.spec_hash != wanted.spec_hash, "the switch's port is part of the spec"
    assert spec.failure_key == wanted.failure_key, "but not of what a failure is keyed by"
    assert change.detail.previous_commit == OLD
    assert change.location == service_location("qa", "account", ["account", "payment"])


def test_secret_values_never_appear_in_reasons_render_or_json() -> None:
    changed = with_env({"DB_HOST": "db-1", "LOG": "debug"}, {"JWT_SECRET": "hunter2-new"})
    for result in (plan_pass(changed, converged(ENV)).plan, plan_pass(ENV, nodes()).plan):
        shown = result.render() + result.to_json() + repr(result.changes)
        assert "hunter2" not in shown
        for change in result.changes:
            if isinstance(change.step, DeployService):
                assert "hunter2" not in repr(change.step.spec.public_spec)
                assert "hunter2" in change.step.model_dump_json(), "the wire carries it"


def test_unknown_branch_in_one_sandbox_does_not_stop_the_others() -> None:
    observed = converged(Desired(by_name(*BASE.sandboxes.values(), sandbox("old", {}))))
    desired = Desired(by_name(
        sandbox("qa", {"account": branch("feature/nope")}),
        sandbox("new", {"user": branch("main")}),
    ))
    result = plan_pass(desired, observed).plan
    assert result.blocked == {"qa"}
    assert {c.sandbox for c in result.changes} == {"new", "old"}
    assert all(c.action is A.CREATE for c in result.changes if c.sandbox == "new")
    assert all(c.action is A.REMOVE for c in result.changes if c.sandbox == "old")


# -- determinism ----------------------------------------------------------------------------------


def busy() -> tuple[Desired, InMemoryNodes]:
    """Several sandboxes mid-change: moved, new, deleted, suspended, drifted."""
    before = Desired(by_name(
        sandbox("qa", {"account": branch("main"), "payment": ocp()}),
        sandbox("b", {"account": branch("main"), "user": branch("main")}),
        sandbox("gone", {"payment": branch("main")}),
        sandbox("sleepy", {"user": branch("main")}),
    ))
    observed = converged(before)
    observed.stop_by_hand("sandbox-b-user")
    observed.edit_routes_by_hand("sandbox-qa-gateway", user_url="http://10.9.9.9:1")
    after = Desired(by_name(
        sandbox("qa", {"account": branch("feature/login-error"), "payment": branch("main")}),
        sandbox("b", {"account": branch("main"), "user": ocp()}),
        sandbox("c", {"user": branch("main")}),
        sandbox("sleepy", {"user": branch("main")}, suspended=True),
    ), heads=heads(erangel={"develop": NEW}))
    return after, observed


def fingerprint(result: Plan) -> str:
    return result.to_json() + "".join(
        c.step.model_dump_json() + repr(c.routes) for c in result.changes)


def shuffled_world(world: World, rng: random.Random) -> World:
    """``world`` with every dict and list of it in another order."""
    views: dict[str, NodeView] = {}
    names = sorted(world.nodes)
    rng.shuffle(names)
    for name in names:
        view = world.nodes[name]
        observation = view.observation
        if observation is not None:
            containers = list(observation.containers)
            networks = list(observation.networks)
            gateways = list(observation.gateways)
            applied = list(observation.last_applied.items())
            for values in (containers, networks, gateways, applied):
                rng.shuffle(values)
            observation = observation.model_copy(update={
                "containers": containers, "networks": networks, "gateways": gateways,
                "last_applied": dict(applied),
            })
        views[name] = replace(view, observation=observation)
    heads = list(world.heads.items())
    rng.shuffle(heads)
    return replace(world, nodes=views, heads=dict(heads))


def test_same_inputs_twice_give_equal_plans() -> None:
    desired, observed = busy()
    first, second = plan_pass(desired, observed).plan, plan_pass(desired, observed).plan
    assert first == second
    assert fingerprint(first) == fingerprint(second)
    assert len(first.changes) > 8, first.render()


@pytest.mark.parametrize("seed", range(5))
def test_dict_and_list_order_of_the_inputs_does_not_change_the_plan(seed: int) -> None:
    from sdp_reconciler.planner.planning import plan

    rng = random.Random(seed)
    desired, observed = busy()
    reference = plan_pass(desired, observed)
    sandboxes = list(desired.sandboxes.items())
    placements = list(reference.placements.items())
    allocations = list(reference.allocations)
    for items in (sandboxes, placements, allocations):
        rng.shuffle(items)
    result = plan(
        sandboxes=dict(sandboxes), world=shuffled_world(reference.world, rng),
        placements=dict(placements), allocations=allocations,
    )
    assert result == reference.plan
    assert fingerprint(result) == fingerprint(reference.plan)


# -- regressions: bugs these tables found, fixed -------------------------------------------------


@pytest.mark.parametrize("desired", [
    qa(account=ocp()), qa(account=target(STAGING)), qa(account=branch("main", port=9005)),
], ids=["to OCP", "to target", "port changed"])
def test_routes_sdp_wrote_itself_are_not_called_a_hand_edit(desired: Desired) -> None:
    observed = converged(BASE)
    ports_file = as_ports_file(plan_pass(BASE, observed).allocations)
    result = plan_pass(replace(desired, ports_file=ports_file), observed).plan
    (routes,) = [c for c in result.changes if c.subject is R]
    assert "routes changed: account_url http://10.0.0.1:9001→" in routes.reason
    assert "edited by hand" not in routes.reason


def from_template(name: str, template_origin: Location) -> Desired:
    resolved = sandbox(name, {"account": branch("main", node="micro-9"), "payment": ocp()})
    account = replace(resolved.services["account"], origin=template_origin)
    return Desired(by_name(replace(resolved, templates=("T",),
                                   services={**resolved.services, "account": account})))


def test_a_problem_in_a_template_blocks_every_sandbox_using_it() -> None:
    template = Location("state/templates/T.yaml", 5, 5)
    before = Desired(by_name(*(sandbox(n, {"account": branch("main"), "payment": ocp()})
                               for n in ("a", "b"))))
    after = Desired({**from_template("a", template).sandboxes,
                     **from_template("b", template).sandboxes})
    result = plan_pass(after, converged(before)).plan
    assert [str(p) for p in result.problems] == [
        "state/templates/T.yaml:5:5: services.account.node: unknown node 'micro-9'"]
    assert result.blocked == {"a", "b"}
    assert result.changes == (), result.render()


def test_a_service_on_an_unreachable_node_is_not_moved_to_another_node() -> None:
    micro2 = node("micro-2", NodeType.MICRO, "10.0.0.3", (9001, 9010))
    observed = converged(BASE, nodes(extra={micro2: [go_repository("account")]}))
    ports_file = as_ports_file(plan_pass(BASE, observed).allocations)
    observed.make_unreachable(MICRO)
    result = plan_pass(replace(BASE, ports_file=ports_file), observed).plan
    assert result.changes == (), result.render()
    assert result.blocked == {"qa"}


def test_placement_does_not_depend_on_the_order_of_world_nodes() -> None:
    from sdp_reconciler.planner.placement import place

    micro2 = node("micro-2", NodeType.MICRO, "10.0.0.3", (9001, 9010))
    observed = converged(BASE, nodes(extra={micro2: [go_repository("account")]}))
    spec = desired_spec(BASE, "qa", "account")
    observed.put("micro-2", observed_container(
        observed.nodes["micro-2"].labels(), spec.model_copy(update={"port": 9002}),
        image="alpine:3.20", id="dup"))
    world = BASE.world(observed)
    reversed_world = replace(world, nodes=dict(reversed(list(world.nodes.items()))))
    first, _ = place(BASE.sandboxes, world)
    second, _ = place(BASE.sandboxes, reversed_world)
    assert first == second

