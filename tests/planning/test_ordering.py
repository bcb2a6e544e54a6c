"""Order of a plan: phases, the order inside one node's batch, batches, and route settling.

A plan runs services, then routes, then cleanup; inside one node's batch: networks, stops,
deploys and starts, route writes, removals, network removals last. Route choices name the
deploy they wait for; ``plan.settle_routes`` (pure, the planner's) turns them into the URLs written.
"""

from __future__ import annotations

import pytest

from sdp_node.protocol import DeployGateway, SetRoutes, StopContainer
from sdp_reconciler.planner.plan import (
    PHASE_ORDER,
    Action,
    Change,
    Phase,
    Plan,
    RouteChoice,
    Subject,
    settle_routes,
)
from sdp_reconciler.state.models import NodeType
from tests.planning.builders import (
    GATEWAY_NODE,
    HEADS,
    MICRO,
    Desired,
    branch,
    by_name,
    converged,
    desired_spec,
    go_repository,
    node,
    nodes,
    ocp,
    plan_pass,
    sandbox,
    sha,
)

A, S, G, R, N = Action, Subject.SERVICE, Subject.GATEWAY, Subject.ROUTES, Subject.NETWORK
MICRO_2 = node("micro-2", NodeType.MICRO, "10.0.0.3", (9101, 9110))


def everything_at_once() -> tuple[Desired, Desired]:
    """(before, after): one sandbox of each kind of change, over two MICRO nodes."""
    before = Desired(by_name(
        sandbox("moved", {"account": branch("main"), "payment": ocp()}),
        sandbox("gone", {"account": branch("main")}),
        sandbox("sleepy", {"account": branch("main")}),
        sandbox("rerouted", {"account": branch("main"), "ledger": ocp()}),
    ))
    after = Desired(by_name(
        sandbox("moved", {"account": branch("main"), "payment": ocp()}),
        sandbox("sleepy", {"account": branch("main")}, suspended=True),
        sandbox("rerouted", {"account": ocp(), "ledger": branch("main")}),
        sandbox("fresh", {"account": branch("main"), "ledger": branch("main")}),
    ), heads={**HEADS, "account": {"main": sha("e4f5a6b")}, "ledger": {"main": sha("1ed6e12")}})
    return before, after


@pytest.fixture
def changes() -> list[Change]:
    """The plan's changes for ``everything_at_once``."""
    before, after = everything_at_once()
    observed = converged(before, nodes(extra={MICRO_2: [go_repository("ledger")]}))
    return list(plan_pass(after, observed).plan.changes)


def test_phases_run_services_then_routes_then_cleanup(changes: list[Change]) -> None:
    phases = [PHASE_ORDER.index(c.phase) for c in changes]
    assert phases == sorted(phases)
    assert {c.phase for c in changes} == {Phase.SERVICES, Phase.ROUTES, Phase.CLEANUP}


def test_order_inside_each_node_batch(changes: list[Change]) -> None:
    batch = [(c.phase, c.node, c.action, c.subject, c.resource) for c in changes]
    assert batch == [
        (Phase.SERVICES, MICRO, A.CREATE, N, "sandbox-fresh"),
        (Phase.SERVICES, MICRO, A.STOP, S, "sandbox-sleepy-account"),
        (Phase.SERVICES, MICRO, A.CREATE, S, "sandbox-fresh-account"),
        (Phase.SERVICES, MICRO, A.UPDATE, S, "sandbox-moved-account"),
        (Phase.SERVICES, "micro-2", A.CREATE, N, "sandbox-fresh"),
        (Phase.SERVICES, "micro-2", A.CREATE, N, "sandbox-rerouted"),
        (Phase.SERVICES, "micro-2", A.CREATE, S, "sandbox-fresh-ledger"),
        (Phase.SERVICES, "micro-2", A.CREATE, S, "sandbox-rerouted-ledger"),
        (Phase.ROUTES, GATEWAY_NODE, A.STOP, G, "sandbox-sleepy-gateway"),
        (Phase.ROUTES, GATEWAY_NODE, A.CREATE, G, "sandbox-fresh-gateway"),
        # The moved account switched to a spare port: its route follows it.
        (Phase.ROUTES, GATEWAY_NODE, A.UPDATE, R, "sandbox-moved-gateway"),
        (Phase.ROUTES, GATEWAY_NODE, A.UPDATE, R, "sandbox-rerouted-gateway"),
        (Phase.CLEANUP, GATEWAY_NODE, A.REMOVE, G, "sandbox-gone-gateway"),
        (Phase.CLEANUP, MICRO, A.REMOVE, S, "sandbox-gone-account"),
        # ... and its previous instance goes once the route moved.
        (Phase.CLEANUP, MICRO, A.REMOVE, S, "sandbox-moved-account--previous"),
        (Phase.CLEANUP, MICRO, A.REMOVE, S, "sandbox-rerouted-account"),
        (Phase.CLEANUP, MICRO, A.REMOVE, N, "sandbox-gone"),
        (Phase.CLEANUP, MICRO, A.REMOVE, N, "sandbox-rerouted"),
    ]


def test_batches_group_by_phase_then_node_in_name_order(changes: list[Change]) -> None:
    batches = Plan(changes=tuple(changes)).batches()
    assert [(phase, name) for phase, name, _ in batches] == [
        (Phase.SERVICES, MICRO), (Phase.SERVICES, "micro-2"),
        (Phase.ROUTES, GATEWAY_NODE),
        (Phase.CLEANUP, GATEWAY_NODE), (Phase.CLEANUP, MICRO),
    ]
    flattened = [c for _, _, batch in batches for c in batch]
    assert flattened == changes, "batches keep the plan's order and lose nothing"
    assert all(c.node == name and c.phase is phase
               for phase, name, batch in batches for c in batch)


def test_step_ids_are_unique_and_routes_wait_on_deploys_of_an_earlier_phase(
    changes: list[Change],
) -> None:
    ids = [c.step_id for c in changes]
    assert len(ids) == len(set(ids))
    by_id = {c.step_id: c for c in changes}
    waits = [(c.resource, r.key, r.depends_on) for c in changes for r in c.routes
             if r.depends_on is not None]
    assert waits == [
        ("sandbox-fresh-gateway", "account", "services:micro-1:sandbox-fresh-account"),
        ("sandbox-fresh-gateway", "ledger", "services:micro-2:sandbox-fresh-ledger"),
        ("sandbox-moved-gateway", "account", "services:micro-1:sandbox-moved-account"),
        ("sandbox-rerouted-gateway", "ledger", "services:micro-2:sandbox-rerouted-ledger"),
    ]
    for _, _, step_id in waits:
        assert step_id is not None
        assert by_id[step_id].phase is Phase.SERVICES
        assert by_id[step_id].action in (A.CREATE, A.UPDATE, A.RECREATE, A.START)


def test_a_stopped_service_is_never_a_route_dependency() -> None:
    running = Desired(by_name(sandbox("qa", {"account": branch("main")})))
    asleep = Desired(by_name(sandbox("qa", {"account": branch("main")}, suspended=True)))
    result = plan_pass(asleep, converged(running)).plan
    assert [type(c.step) for c in result.changes] == [StopContainer, StopContainer]
    assert all(not c.routes for c in result.changes)


# -- settle_routes --------------------------------------------------------------------------------

DEPLOY = "services:micro-1:sandbox-qa-account"
NEW_URL, OLD_URL, OCP_URL = "http://10.0.0.1:9002", "http://10.0.0.1:9001", "https://ocp.invalid"
QA = Desired(by_name(sandbox("qa", {"account": branch("main")})))


def gateway_change(*routes: RouteChoice) -> Change:
    spec = desired_spec(QA, "qa", "gateway")
    return Change(
        action=A.UPDATE, subject=G, phase=Phase.ROUTES, sandbox="qa", service="gateway",
        node=GATEWAY_NODE, resource=spec.container, reason="branch moved",
        step=DeployGateway(step_id="routes:gateway-1:sandbox-qa-gateway", spec=spec,
                           routes={}),
        routes=routes,
    )


def routes_change(written: dict[str, str], *routes: RouteChoice) -> Change:
    return Change(
        action=A.UPDATE, subject=R, phase=Phase.ROUTES, sandbox="qa", service="gateway",
        node=GATEWAY_NODE, resource="sandbox-qa-gateway", reason="routes changed",
        step=SetRoutes(step_id="routes:gateway-1:sandbox-qa-gateway", sandbox="qa",
                       container="sandbox-qa-gateway", routes=written),
        routes=routes,
    )


WAITS = RouteChoice("account", NEW_URL, "sandbox", depends_on=DEPLOY, fallback=OLD_URL)
WAITS_NEW = RouteChoice("account", NEW_URL, "sandbox", depends_on=DEPLOY, fallback=None)
OCP_CHOICE = RouteChoice("payment", None, "ocp")
TARGET = RouteChoice("user", "https://user.staging.invalid", "target")

SETTLE_GATEWAY = [
    ("deploy failed: the previous route", (WAITS,), {DEPLOY}, {"account": OLD_URL}),
    ("deploy failed, no previous route: the commit's own value", (WAITS_NEW,), {DEPLOY}, {}),
    ("deploy succeeded: the new URL", (WAITS, OCP_CHOICE, TARGET), set(),
     {"account": NEW_URL, "user": "https://user.staging.invalid"}),
    ("another step failed: the new URL", (WAITS,), {"services:micro-1:other"},
     {"account": NEW_URL}),
    ("OCP is never written: the fresh tree has the commit's value", (OCP_CHOICE,), {DEPLOY},
     {}),
]


@pytest.mark.parametrize(("choices", "failed", "written"), [c[1:] for c in SETTLE_GATEWAY],
                         ids=[c[0] for c in SETTLE_GATEWAY])
def test_settle_routes_of_a_gateway_deploy(
    choices: tuple[RouteChoice, ...], failed: set[str], written: dict[str, str],
) -> None:
    change = gateway_change(*choices)
    step = settle_routes(change, failed)
    assert isinstance(step, DeployGateway)
    assert step.routes == written
    assert step.spec == change.step.spec  # type: ignore[union-attr]
    assert change.step.routes == {}, "the plan itself is not changed"  # type: ignore[union-attr]


SETTLE_SET_ROUTES = [
    ("deploy failed: the previous value is kept", {"account": NEW_URL, "payment": OCP_URL},
     (WAITS,), {DEPLOY}, {"account": OLD_URL, "payment": OCP_URL}),
    ("deploy failed, nothing before: the key is left alone",
     {"account": NEW_URL, "payment": OCP_URL}, (WAITS_NEW,), {DEPLOY},
     {"payment": OCP_URL}),
    ("deploy succeeded", {"account": NEW_URL, "payment": OCP_URL}, (WAITS,), set(),
     {"account": NEW_URL, "payment": OCP_URL}),
    ("no dependency: as planned", {"payment": OCP_URL}, (OCP_CHOICE,), {DEPLOY},
     {"payment": OCP_URL}),
]


@pytest.mark.parametrize(("planned", "choices", "failed", "written"),
                         [c[1:] for c in SETTLE_SET_ROUTES], ids=[c[0] for c in SETTLE_SET_ROUTES])
def test_settle_routes_of_an_in_place_route_change(
    planned: dict[str, str], choices: tuple[RouteChoice, ...], failed: set[str],
    written: dict[str, str],
) -> None:
    step = settle_routes(routes_change(planned, *choices), failed)
    assert isinstance(step, SetRoutes)
    assert step.routes == written


def test_settle_routes_leaves_other_steps_alone() -> None:
    stop = StopContainer(step_id="services:micro-1:x", container="sandbox-qa-account")
    change = Change(action=A.STOP, subject=S, phase=Phase.SERVICES, sandbox="qa",
                    service="account", node=MICRO, resource="sandbox-qa-account",
                    reason="sandbox suspended", step=stop)
    assert settle_routes(change, {DEPLOY}) is stop
