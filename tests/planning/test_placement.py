"""Placement over several MICRO nodes, as tables: spreading by free capacity, stability across
passes (nothing moves without a reason), cordon, pins. Pure: worlds built in memory."""

from __future__ import annotations

from collections import Counter

import pytest
from msgspec.structs import replace

from sdp_reconciler.planner.placement import place
from sdp_reconciler.state.models import Node, NodeCapacity, NodeType, Resources
from tests.planning.builders import (
    MICRO,
    Desired,
    branch,
    by_name,
    converged,
    go_repository,
    node,
    nodes,
    plan_pass,
    reconcile_once,
    sandbox,
)
from tests.planning.fakes import InMemoryNode, InMemoryNodes

SERVICES = ("account", "payment", "user")


def micro(name: str, n: int, *, cordoned: bool = False, capacity: NodeCapacity | None = None,
          ) -> Node:
    return node(name, NodeType.MICRO, f"10.0.1.{n}", (9001, 9099)).model_copy(
        update={"cordoned": cordoned, "capacity": capacity})


def three_micro(**others: Node) -> InMemoryNodes:
    """micro-1 (the standard one), micro-2 and micro-3 (or as given), all serving every Go
    service."""
    extra = {others.get("micro2") or micro("micro-2", 2): [go_repository(r) for r in SERVICES],
             others.get("micro3") or micro("micro-3", 3): [go_repository(r) for r in SERVICES]}
    return nodes(micro_ports=(9001, 9099), extra=extra)


def add_node(observed: InMemoryNodes, new: Node) -> None:
    observed.nodes[new.name] = InMemoryNode(new, observed.installation,
                                            {r: go_repository(r) for r in SERVICES})


def many(count: int, services: tuple[str, ...] = ("account",),
         resources: Resources | None = None) -> Desired:
    return Desired(by_name(*(sandbox(f"qa-{i:02d}", {s: branch("main") for s in services},
                                     resources=resources, gateway=None)
                             for i in range(count))))


def counts(desired: Desired, observed: InMemoryNodes) -> Counter[str]:
    placements, problems = place(desired.sandboxes, desired.world(observed))
    assert problems == []
    return Counter(p.node for p in placements.values())


def test_new_services_spread_over_the_nodes_by_container_count() -> None:
    assert counts(many(6, SERVICES), three_micro()) == {"micro-1": 6, "micro-2": 6,
                                                        "micro-3": 6}


@pytest.mark.parametrize(("capacities", "expected"), [
    # cpu 4 vs 1 vs 1 with 500m services: the big node takes its share of 8 slots first
    ((NodeCapacity(cpu="4"), NodeCapacity(cpu="1"), NodeCapacity(cpu="1")),
     {"micro-2": 6, "micro-3": 1, "micro-1": 1}),
    # memory decides when cpu is not declared; micro-1 declares nothing: it counts as large
    # as the largest (4Gi) and is never full
    ((NodeCapacity(memory="4Gi"), NodeCapacity(memory="1Gi"), None),
     {"micro-1": 4, "micro-2": 3, "micro-3": 1}),
])
def test_services_fill_the_node_with_the_most_room_left(
        capacities: tuple[NodeCapacity | None, ...], expected: dict[str, int]) -> None:
    observed = three_micro(micro2=micro("micro-2", 2, capacity=capacities[0]),
                           micro3=micro("micro-3", 3, capacity=capacities[1]))
    if capacities[2] is not None:
        observed = _with_micro_one(observed, capacity=capacities[2])
    desired = many(8, resources=Resources(cpu="500m", memory="512Mi"))
    assert counts(desired, observed) == expected


def _with_micro_one(observed: InMemoryNodes, **update: object) -> InMemoryNodes:
    observed.nodes[MICRO].node = observed.nodes[MICRO].node.model_copy(update=update)
    return observed


def test_a_service_that_fits_nowhere_is_a_problem_at_its_entry() -> None:
    full = NodeCapacity(containers=1)
    observed = _with_micro_one(three_micro(micro2=micro("micro-2", 2, capacity=full),
                                           micro3=micro("micro-3", 3, capacity=full)),
                               capacity=full)
    desired = many(4)
    placements, problems = place(desired.sandboxes, desired.world(observed))
    assert len(placements) == 3
    assert [(str(p.location.file), p.path) for p in problems] == [
        ("state/sandboxes/qa-03.yaml", "services.account")]
    assert "has room" in problems[0].message and "capacity" in problems[0].message


def test_a_second_pass_moves_nothing_and_a_new_node_takes_only_new_services() -> None:
    desired = many(6)
    observed = three_micro()
    first, _, desired = reconcile_once(desired, observed)
    where = {k: p.node for k, p in first.placements.items()}
    again = plan_pass(desired, observed)
    assert again.plan.changes == (), again.plan.render()
    # A fourth, empty node: nothing moves to it; the next new services go there first.
    add_node(observed, micro("micro-4", 4))
    grown = replace(desired, sandboxes={**desired.sandboxes, **many(8).sandboxes})
    placements, problems = place(grown.sandboxes, grown.world(observed), grown.ports_file)
    assert problems == []
    assert {k: p.node for k, p in placements.items() if k in where} == where
    assert Counter(p.node for k, p in placements.items() if k not in where) == {"micro-4": 2}


def test_a_cordoned_node_gets_nothing_new_and_keeps_what_it_runs() -> None:
    desired = many(3)
    observed = three_micro()
    _, _, desired = reconcile_once(desired, observed)
    running_on_one = {(a.sandbox, a.service) for a in desired.ports_file if a.node == MICRO}
    assert running_on_one
    _with_micro_one(observed, cordoned=True)
    grown = replace(desired, sandboxes={**desired.sandboxes, **many(9).sandboxes})
    placements, problems = place(grown.sandboxes, grown.world(observed), grown.ports_file)
    assert problems == []
    assert {k for k, p in placements.items() if p.node == MICRO} == running_on_one


def test_every_serving_node_cordoned_is_a_problem_that_says_what_to_do() -> None:
    observed = _with_micro_one(three_micro(micro2=micro("micro-2", 2, cordoned=True),
                                           micro3=micro("micro-3", 3, cordoned=True)),
                               cordoned=True)
    desired = many(1)
    _, problems = place(desired.sandboxes, desired.world(observed))
    assert len(problems) == 1 and "cordoned" in problems[0].message
    assert "uncordon" in problems[0].message


def test_a_pin_is_honoured_even_on_a_cordoned_or_full_node() -> None:
    observed = three_micro(micro3=micro("micro-3", 3, cordoned=True,
                                        capacity=NodeCapacity(containers=1)))
    desired = Desired(by_name(*(sandbox(f"qa-{i}", {"account": branch("main", node="micro-3")},
                                        gateway=None) for i in range(3))))
    assert counts(desired, observed) == {"micro-3": 3}


def test_a_service_not_running_returns_to_the_node_ports_yaml_remembers() -> None:
    desired = many(3)
    observed = three_micro()
    first, _, desired = reconcile_once(desired, observed)
    fresh = three_micro()  # its containers are gone (a node rebuilt), ports.yaml remains
    placements, _ = place(desired.sandboxes, desired.world(fresh), desired.ports_file)
    assert {k: p.node for k, p in placements.items()} == \
        {k: p.node for k, p in first.placements.items()}


def test_converged_worlds_of_several_nodes_plan_no_changes() -> None:
    desired = many(5, SERVICES)
    observed = converged(desired, three_micro())
    assert plan_pass(desired, observed).plan.changes == ()
