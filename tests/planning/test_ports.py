"""``ports.allocate`` as a table, a no-two-owners property, ``release`` and ``write_ports_file``.

A row gives the sandboxes, what ``ports.yaml`` holds, what the nodes show, and the
(node, port) every (sandbox, service) ends with. Placements come from the real
``placement.place``; nodes from ``InMemoryNodes`` (micro-1 ranges 9001-9010, gateway-1
8080-8089 unless a row narrows them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import Struct, field
from msgspec.structs import replace
from ruamel.yaml import YAML

from sdp_reconciler.apply.portsfile import write_ports_file
from sdp_reconciler.planner.placement import place
from sdp_reconciler.planner.ports import Allocation, allocate, release
from sdp_reconciler.state.models import GatewaySpec, PortAllocation, PortsFile
from sdp_reconciler.state.resolve import ResolvedSandbox
from sdp_reconciler.state.sources import Location, Problem
from tests.planning.builders import (
    GATEWAY_NODE,
    MICRO,
    NOW,
    Desired,
    branch,
    by_name,
    converged,
    nodes,
    ocp,
    plan_pass,
    reconcile_once,
    sandbox,
    sandbox_file,
    service_location,
)
from tests.planning.fakes import InMemoryNodes

EARLIER = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
Key = tuple[str, str]
Held = tuple[str, int]


def held(sandbox_name: str, service: str, port: int, node_name: str = MICRO) -> PortAllocation:
    return PortAllocation(sandbox=sandbox_name, service=service, node=node_name, port=port,
                          allocated_at=EARLIER)


def qa(**extra: object) -> ResolvedSandbox:
    return sandbox("qa", {"account": branch("main", **extra), "payment": ocp()})


def micro_only(name: str, **extra: object) -> ResolvedSandbox:
    return sandbox(name, {"account": branch("main", **extra)}, gateway=None)


def running(*sandboxes: ResolvedSandbox, ports_file: tuple[PortAllocation, ...] = (),
            micro_ports: tuple[int, int] = (9001, 9010)) -> Callable[[], InMemoryNodes]:
    """Nodes that run ``sandboxes`` (with ``ports_file`` as it was then)."""
    return lambda: converged(Desired(by_name(*sandboxes), ports_file=ports_file),
                             nodes(micro_ports=micro_ports))


def unreachable_micro() -> InMemoryNodes:
    observed = nodes()
    observed.make_unreachable(MICRO)
    return observed


class PortCase(Struct, frozen=True):
    id: str
    sandboxes: list[ResolvedSandbox]
    expected: dict[Key, Held]
    ports_file: tuple[PortAllocation, ...] = ()
    observed: Callable[[], InMemoryNodes] = nodes
    problems: list[tuple[Location, str]] = field(default_factory=list)


QA_ACCOUNT = service_location("qa", "account", ["account", "payment"])

PORT_CASES = [
    PortCase("explicit ports honoured", [sandbox(
        "qa", {"account": branch("main", port=9005)},
        gateway=GatewaySpec(branch="develop", port=8085))],
        {("qa", "account"): (MICRO, 9005), ("qa", "gateway"): (GATEWAY_NODE, 8085)}),
    PortCase("an explicit port wins over ports.yaml", [qa(port=9005)],
             {("qa", "account"): (MICRO, 9005), ("qa", "gateway"): (GATEWAY_NODE, 8080)},
             ports_file=(held("qa", "account", 9001),)),
    PortCase("kept from ports.yaml", [qa()],
             {("qa", "account"): (MICRO, 9007), ("qa", "gateway"): (GATEWAY_NODE, 8083)},
             ports_file=(held("qa", "account", 9007), held("qa", "gateway", 8083,
                                                            GATEWAY_NODE))),
    PortCase("recovered from sdp.port labels when ports.yaml is empty (fresh CI clone)", [qa()],
             {("qa", "account"): (MICRO, 9004), ("qa", "gateway"): (GATEWAY_NODE, 8086)},
             observed=running(qa(), ports_file=(
                 held("qa", "account", 9004), held("qa", "gateway", 8086, GATEWAY_NODE)))),
    PortCase("lowest free port", [micro_only("a"), micro_only("b"), micro_only("qa")],
             {("a", "account"): (MICRO, 9001), ("b", "account"): (MICRO, 9003),
              ("qa", "account"): (MICRO, 9002)},
             ports_file=(held("a", "account", 9001), held("b", "account", 9003))),
    PortCase("never a port a container of another sandbox holds (labels only)",
             [micro_only("other"), micro_only("qa")],
             {("other", "account"): (MICRO, 9001), ("qa", "account"): (MICRO, 9002)},
             observed=running(micro_only("other"))),
    PortCase("never a port a container of a deleted sandbox still holds",
             [micro_only("qa")], {("qa", "account"): (MICRO, 9002)},
             observed=running(micro_only("gone"))),
    PortCase("never a port another sandbox claims explicitly",
             [micro_only("pinned", port=9001), micro_only("qa")],
             {("pinned", "account"): (MICRO, 9001), ("qa", "account"): (MICRO, 9002)}),
    PortCase("range exhausted: a problem at the service", [micro_only("a"), micro_only("b"),
                                                           qa()],
             {("a", "account"): (MICRO, 9001), ("b", "account"): (MICRO, 9002),
              ("qa", "gateway"): (GATEWAY_NODE, 8080)},
             ports_file=(held("a", "account", 9001), held("b", "account", 9002)),
             observed=lambda: nodes(micro_ports=(9001, 9002)),
             problems=[(QA_ACCOUNT, "no free port left on node micro-1 (9001-9002) for "
                                    "sandbox 'qa' service 'account': widen its range in "
                                    "nodes.yaml or remove unused sandboxes")]),
    PortCase("an unwanted allocation is kept while its node is unreachable",
             [sandbox("qa", {"payment": ocp()})], {("qa", "gateway"): (GATEWAY_NODE, 8080),
                                                  ("gone", "account"): (MICRO, 9001)},
             ports_file=(held("gone", "account", 9001),), observed=unreachable_micro),
    PortCase("an unwanted allocation is kept while its node still shows the container",
             [micro_only("qa")], {("gone", "account"): (MICRO, 9001),
                                  ("qa", "account"): (MICRO, 9002)},
             ports_file=(held("gone", "account", 9001),), observed=running(micro_only("gone"))),
    PortCase("an unwanted allocation is dropped once its node shows no container",
             [micro_only("qa")], {("qa", "account"): (MICRO, 9002)},
             ports_file=(held("gone", "account", 9001),)),
    PortCase("a cloned sandbox (new name, same services) gets new ports", [qa(), sandbox(
        "qa-copy", {"account": branch("main"), "payment": ocp()})],
        {("qa", "account"): (MICRO, 9001), ("qa", "gateway"): (GATEWAY_NODE, 8080),
         ("qa-copy", "account"): (MICRO, 9002), ("qa-copy", "gateway"): (GATEWAY_NODE, 8081)},
        ports_file=(held("qa", "account", 9001), held("qa", "gateway", 8080, GATEWAY_NODE)),
        observed=running(qa())),
]


def allocate_for(sandboxes: list[ResolvedSandbox], ports_file: tuple[PortAllocation, ...],
                 observed: InMemoryNodes) -> tuple[list[Allocation], list[Problem]]:
    desired = Desired(by_name(*sandboxes), ports_file=ports_file)
    world = desired.world(observed)
    placements, problems = place(desired.sandboxes, world)
    assert problems == [] or observed.nodes[MICRO].unreachable, problems
    return allocate(sandboxes=desired.sandboxes, placements=placements, existing=ports_file,
                    world=world, now=NOW)


@pytest.mark.parametrize("case", PORT_CASES, ids=[c.id for c in PORT_CASES])
def test_allocate(case: PortCase) -> None:
    allocations, problems = allocate_for(case.sandboxes, case.ports_file, case.observed())
    assert {(a.sandbox, a.service): (a.node, a.port) for a in allocations} == case.expected
    assert [(a.sandbox, a.service) for a in allocations] == sorted(case.expected)
    assert [(p.location, p.message) for p in problems] == case.problems


def from_template(name: str) -> ResolvedSandbox:
    """A sandbox whose one service entry is written in ``state/templates/T.yaml``."""
    resolved = micro_only(name)
    account = replace(resolved.services["account"], origin=TEMPLATE_ACCOUNT)
    return replace(resolved, templates=("T",), services={"account": account})


TEMPLATE_ACCOUNT = Location("state/templates/T.yaml", 5, 5)


def test_range_exhausted_by_a_template_names_every_sandbox_left_without_a_port() -> None:
    """Five sandboxes from one template, three ports: the two left over are each named, at
    their own file, and only they are held back (not every user of the template)."""
    names = ["a", "b", "c", "d", "e"]
    desired = Desired(by_name(*(from_template(n) for n in names)))
    result = plan_pass(desired, nodes(micro_ports=(9001, 9003)))
    assert [str(p) for p in result.plan.problems] == [
        f"{sandbox_file(n)}:1:1: services.account.port: no free port left on node micro-1 "
        f"(9001-9003) for sandbox {n!r} service 'account': widen its range in nodes.yaml or remove "
        "unused sandboxes" for n in ("d", "e")]
    assert result.plan.blocked == {"d", "e"}
    assert {c.sandbox for c in result.plan.changes} == {"a", "b", "c"}


def test_kept_allocations_keep_their_time_and_new_ones_get_now() -> None:
    allocations, _ = allocate_for([qa()], (held("qa", "account", 9007),), nodes())
    assert {(a.service, a.allocated_at) for a in allocations} == {
        ("account", EARLIER), ("gateway", NOW)}


def test_an_explicit_claim_on_a_port_another_sandbox_runs_on_is_not_a_second_owner() -> None:
    allocations, problems = allocate_for(
        [micro_only("other"), micro_only("qa", port=9001)], (), running(micro_only("other"))())
    owners = Counter((a.node, a.port) for a in allocations)
    assert max(owners.values()) == 1 or problems, allocations


# -- never two owners, whatever happened before --------------------------------------------------

SERVICES = ("account", "payment", "user")
sandbox_names = st.sampled_from(["a", "b", "c", "d"])
service_sets = st.sets(st.sampled_from(SERVICES), max_size=3)


@st.composite
def states(draw: st.DrawFn) -> Desired:
    chosen = draw(st.dictionaries(sandbox_names, service_sets, max_size=4))
    return Desired(by_name(*(
        sandbox(name, {s: branch("main") for s in services}) for name, services in
        chosen.items())))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=states(), after=states(), fresh_clone=st.booleans())
def test_no_port_ever_has_two_owners(before: Desired, after: Desired, fresh_clone: bool) -> None:
    observed = nodes(micro_ports=(9001, 9020))
    _, _, before = reconcile_once(before, observed)
    ports_file = () if fresh_clone else before.ports_file
    desired = Desired(after.sandboxes, ports_file=ports_file)
    allocations, problems = allocate_for(list(desired.sandboxes.values()), ports_file, observed)
    owners = Counter((a.node, a.port) for a in allocations)
    assert all(n == 1 for n in owners.values()), allocations
    assert problems == []
    for a in allocations:
        assert a.port in observed.nodes[a.node].node.port_range()
    wanted = {(s, svc) for s, sb in desired.sandboxes.items() for svc in [*sb.services, "gateway"]}
    assert wanted <= {(a.sandbox, a.service) for a in allocations}
    published = Counter(
        (name, c.labels["sdp.port"]) for name, view in observed.nodes.items()
        for c in view.containers.values())
    assert all(n == 1 for n in published.values()), "the earlier pass published a port twice"


# -- release and ports.yaml -----------------------------------------------------------------------


def test_release_drops_only_confirmed_removals() -> None:
    allocations = [
        Allocation("qa", "account", MICRO, 9001, EARLIER),
        Allocation("qa", "gateway", GATEWAY_NODE, 8080, EARLIER),
        Allocation("gone", "account", MICRO, 9002, EARLIER),
    ]
    assert release(allocations, {("gone", "account")}) == allocations[:2]
    assert release(allocations, set()) == allocations


def read_back(path: Path) -> PortsFile:
    return PortsFile.model_validate(YAML(typ="safe").load(path.read_text()))


def test_write_ports_file_round_trip_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "ports.yaml"
    path.write_text(
        "# Ports of our sandboxes. Do not edit by hand.\n"
        "allocations:  # kept by sdp-reconcile\n"
        "  - sandbox: old\n    service: account\n    node: micro-1\n    port: 9009\n"
        "    allocated_at: 2025-01-01T00:00:00+00:00\n"
    )
    allocations = [
        Allocation("qa", "account", MICRO, 9001, EARLIER),
        Allocation("qa", "gateway", GATEWAY_NODE, 8080, NOW),
    ]
    write_ports_file(path, allocations)
    text = path.read_text()
    assert "# Ports of our sandboxes. Do not edit by hand." in text
    assert [(a.sandbox, a.service, a.node, a.port, a.allocated_at)
            for a in read_back(path).allocations] == [
        ("qa", "account", MICRO, 9001, EARLIER), ("qa", "gateway", GATEWAY_NODE, 8080, NOW)]
    write_ports_file(path, release(allocations, {("qa", "gateway")}))
    assert "# Ports of our sandboxes. Do not edit by hand." in path.read_text()
    assert [a.service for a in read_back(path).allocations] == ["account"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ports.yaml"], "no partial file left"


def test_a_new_ports_file_points_at_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "ports.yaml"
    write_ports_file(path, [Allocation("qa", "account", MICRO, 9001, EARLIER)])
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/ports.schema.json\n")
    assert read_back(path).allocations[0].port == 9001
