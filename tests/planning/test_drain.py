"""Draining a MICRO node (``drained: true`` in nodes.yaml, written by ``sdp-reconcile drain``):
its services are placed on other nodes, and the plan moves each through the health-gated
switch across nodes: the new container on the target node in the services phase, the route in
the routes phase (waiting for that deploy), the old container's drain in the cleanup phase
(waiting for both). Pure: worlds built in memory, applied by ``InMemoryNodes``."""

from __future__ import annotations

from collections import Counter

import pytest

from sdp_node.naming import DEFAULT_NAMES
from sdp_node.protocol import DeployService, DrainContainer, RemoveNetwork, SetRoutes
from sdp_reconciler.errors import StateError
from sdp_reconciler.planner.placement import place
from sdp_reconciler.planner.plan import Action, Change, Phase, Subject
from sdp_reconciler.state.models import Node, NodeCapacity, NodeType, Resources
from tests.planning.builders import (
    MICRO,
    Desired,
    branch,
    by_name,
    plan_pass,
    reconcile_once,
    sandbox,
)
from tests.planning.fakes import InMemoryNodes
from tests.planning.test_placement import _with_micro_one, micro, three_micro

A = Action
S = Subject


def spread(count: int = 3) -> tuple[Desired, InMemoryNodes]:
    """``count`` sandboxes with an account service and a gateway, run over three nodes."""
    desired = Desired(by_name(*(sandbox(f"qa-{i:02d}", {"account": branch("main")},
                                        resources=Resources(cpu="250m", memory="128Mi"))
                                for i in range(count))))
    observed = three_micro()
    _, outcome, desired = reconcile_once(desired, observed)
    assert not outcome.failed_steps()
    return desired, observed


def where(observed: InMemoryNodes) -> dict[str, str]:
    """Account container -> the node running it."""
    return {name: node_name for node_name, node in observed.nodes.items()
            for name in node.containers if name.endswith("-account")}


def drain_micro_one(observed: InMemoryNodes) -> InMemoryNodes:
    return _with_micro_one(observed, drained=True)


def only(changes: tuple[Change, ...], kind: type) -> Change:
    found = [c for c in changes if isinstance(c.step, kind)]
    assert len(found) == 1, found
    return found[0]


def test_a_drained_nodes_services_are_placed_elsewhere_and_the_others_stay() -> None:
    desired, observed = spread(6)
    before = where(observed)
    on_one = {c for c, n in before.items() if n == MICRO}
    assert len(on_one) == 2
    placements, problems = place(desired.sandboxes, desired.world(drain_micro_one(observed)),
                                 desired.ports_file)
    assert problems == []
    after = {DEFAULT_NAMES.container(s, svc): p.node for (s, svc), p in placements.items()
             if svc == "account"}
    assert all(after[c] != MICRO for c in on_one)
    assert {c: n for c, n in after.items() if c not in on_one} == \
        {c: n for c, n in before.items() if c not in on_one}, "nothing else moves"
    assert Counter(after.values()) == {"micro-2": 3, "micro-3": 3}


@pytest.mark.parametrize(("capacities", "expected"), [
    # micro-2 full (one container each): both of micro-1's services go to micro-3
    ((NodeCapacity(containers=2), None), {"micro-2": 2, "micro-3": 4}),
    # micro-3 has four times the cpu: it takes the moved services first
    ((NodeCapacity(cpu="1"), NodeCapacity(cpu="4")), {"micro-2": 2, "micro-3": 4}),
    # no capacity anywhere: the fewest containers, then the name
    ((None, None), {"micro-2": 3, "micro-3": 3}),
])
def test_where_a_drained_nodes_services_go_is_decided_by_free_capacity(
        capacities: tuple[NodeCapacity | None, NodeCapacity | None],
        expected: dict[str, int]) -> None:
    desired, observed = spread(6)
    observed.nodes["micro-2"].node = micro("micro-2", 2, capacity=capacities[0])
    observed.nodes["micro-3"].node = micro("micro-3", 3, capacity=capacities[1])
    placements, problems = place(desired.sandboxes, desired.world(drain_micro_one(observed)),
                                 desired.ports_file)
    assert problems == []
    assert Counter(p.node for p in placements.values() if p.service == "account") == expected


def test_no_other_node_with_room_is_a_problem_naming_why() -> None:
    desired, observed = spread(3)
    full = NodeCapacity(containers=1)
    observed.nodes["micro-2"].node = micro("micro-2", 2, capacity=full)
    observed.nodes["micro-3"].node = micro("micro-3", 3, capacity=full)
    _, problems = place(desired.sandboxes, desired.world(drain_micro_one(observed)),
                        desired.ports_file)
    assert [p.path for p in problems] == ["services.account"]
    assert "has room" in problems[0].message


def test_a_service_pinned_to_a_drained_node_is_a_problem_at_its_pin() -> None:
    observed = three_micro()
    desired = Desired(by_name(sandbox("qa-pin", {"account": branch("main", node=MICRO)})))
    _, problems = place(desired.sandboxes, desired.world(drain_micro_one(observed)))
    assert [(p.path, "drained" in p.message, "pin" in p.message) for p in problems] == [
        ("services.account.node", True, True)]


def test_the_move_starts_beside_moves_the_route_then_drains_the_old_one() -> None:
    desired, observed = spread(3)
    result = plan_pass(desired, drain_micro_one(observed)).plan
    assert result.problems == ()
    deploy = only(result.changes, DeployService)
    routes = only(result.changes, SetRoutes)
    drain = only(result.changes, DrainContainer)
    network = only(result.changes, RemoveNetwork)
    container = "sandbox-qa-00-account"
    assert (deploy.action, deploy.node, deploy.resource, deploy.phase) == \
        (A.CREATE, "micro-2", container, Phase.SERVICES)
    assert "moved from node micro-1 (node micro-1 is drained)" in deploy.reason
    assert isinstance(deploy.step, DeployService)
    port = deploy.step.spec.port
    assert routes.phase is Phase.ROUTES and routes.sandbox == "qa-00"
    assert [(r.key, r.url, r.depends_on, r.fallback) for r in routes.routes] == [
        ("account", f"http://10.0.1.2:{port}", deploy.step_id, "http://10.0.0.1:9001")]
    assert (drain.action, drain.node, drain.resource, drain.phase) == \
        (A.REMOVE, MICRO, container, Phase.CLEANUP)
    assert set(drain.after) == {deploy.step_id, routes.step_id}
    assert "drains and goes once the routes moved" in drain.reason
    assert network.node == MICRO and set(network.after) == set(drain.after)
    assert len(result.changes) == 5, result.render()  # and the network on micro-2


def test_after_the_move_nothing_runs_on_the_drained_node_and_a_second_pass_is_empty() -> None:
    desired, observed = spread(3)
    drain_micro_one(observed)
    _, outcome, desired = reconcile_once(desired, observed)
    assert not outcome.failed_steps()
    assert not observed.nodes[MICRO].containers and not observed.nodes[MICRO].networks
    gateway = observed.gateway("sandbox-qa-00-gateway")
    assert gateway is not None and gateway.live_routes["account"].startswith("http://10.0.1.2:")
    again = plan_pass(desired, observed)
    assert again.plan.changes == () and again.plan.problems == (), again.plan.render()


def test_a_failed_deploy_on_the_target_keeps_the_old_one_serving_and_its_route() -> None:
    desired, observed = spread(3)
    drain_micro_one(observed)
    first, outcome, desired = reconcile_once(desired, observed,
                                             failing={"sandbox-qa-00-account"})
    assert only(first.plan.changes, DeployService).step_id in outcome.failed_steps()
    assert "sandbox-qa-00-account" in observed.nodes[MICRO].containers, "never stopped"
    assert "sandbox-qa-00" in observed.nodes[MICRO].networks
    gateway = observed.gateway("sandbox-qa-00-gateway")
    assert gateway is not None and gateway.live_routes["account"] == "http://10.0.0.1:9001"
    # The node remembers the failure: the next pass neither retries nor removes the old one,
    # keeps the route on it and says so.
    deploy = only(first.plan.changes, DeployService)
    assert isinstance(deploy.step, DeployService)
    observed.remember_failure("micro-2", deploy.step.spec)
    again = plan_pass(desired, observed).plan
    assert again.changes == (), again.render()
    assert any("stays on node micro-1 until it runs on node micro-2" in n for n in again.notes)


def test_an_unreachable_drained_node_is_reported_and_nothing_moves() -> None:
    desired, observed = spread(3)
    drain_micro_one(observed)
    observed.make_unreachable(MICRO)
    result = plan_pass(desired, observed).plan
    assert not [c for c in result.changes if c.sandbox == "qa-00"], result.render()
    assert "qa-00" in result.blocked
    assert any("micro-1 is unreachable" in p.message for p in result.problems)


def test_only_a_micro_node_can_be_drained() -> None:
    with pytest.raises(ValueError, match="only a MICRO node can be drained"):
        Node(name="gateway-9", type=NodeType.GATEWAY, address="10.0.0.9",
             public_address="10.0.0.9", drained=True)
    assert StateError  # the loader reports it at nodes.yaml's line (tests/state corpus)
