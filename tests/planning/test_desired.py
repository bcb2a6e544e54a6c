"""``desired.desire``: one frozen value per thing a node should run, with its origin.

The values are what the plan compares with the nodes: the spec a value carries is the spec the
deploy step sends, and a sandbox with a problem gets no value at all.
"""

from __future__ import annotations

import pytest

from sdp_node.protocol import DeployGateway, DeployService
from sdp_reconciler.planner.desired import (
    DesiredGateway,
    DesiredNetwork,
    DesiredService,
    DesiredState,
    desire,
)
from sdp_reconciler.planner.placement import place
from sdp_reconciler.planner.ports import allocate
from sdp_reconciler.planner.routetable import DEFAULT_VARIABLE, RouteKind
from tests.planning.builders import (
    NOW,
    OCP,
    Desired,
    branch,
    by_name,
    gateway_location,
    nodes,
    ocp,
    plan_pass,
    sandbox,
    service_location,
    target,
)

QA = Desired(by_name(sandbox("qa", {"account": branch("main"), "payment": ocp(),
                                    "user": target("https://user.example.invalid")})))


def desired_of(desired: Desired) -> DesiredState:
    world = desired.world(nodes())
    placements, problems = place(desired.sandboxes, world, desired.ports_file)
    allocations, more = allocate(sandboxes=desired.sandboxes, placements=placements,
                                 existing=desired.ports_file, world=world, now=NOW)
    return desire(sandboxes=desired.sandboxes, world=world, placements=placements,
                  allocations=allocations, problems=[*problems, *more])


def test_one_value_per_thing_with_its_origin() -> None:
    state = desired_of(QA)
    things = state.things["qa"]
    assert [type(t) for t in things] == [DesiredNetwork, DesiredService, DesiredGateway]
    network, service, gateway = things
    assert isinstance(network, DesiredNetwork) and isinstance(service, DesiredService)
    assert isinstance(gateway, DesiredGateway)
    assert (network.node, network.name) == ("micro-1", "sandbox-qa")
    assert (service.service, service.node, service.network) == ("account", "micro-1",
                                                                 "sandbox-qa")
    assert service.origin == service_location("qa", "account", ["account", "payment", "user"])
    assert gateway.origin == gateway_location("qa")
    declared = [r for r in gateway.table.routes if r.declared]
    assert [(r.key, r.kind) for r in declared] == [
        ("account", RouteKind.SANDBOX), ("payment", RouteKind.OCP), ("user", RouteKind.TARGET)]
    assert declared[0].url == f"http://10.0.0.1:{service.spec.port}"
    assert declared[1].url == OCP["payment"]
    assert declared[2].url == "https://user.example.invalid"
    assert [r.origin for r in declared] == [
        service_location("qa", s, ["account", "payment", "user"])
        for s in ("account", "payment", "user")]
    assert state.blocked == frozenset() and state.problems == ()


def test_the_services_url_variables_come_from_the_gateways_table() -> None:
    state = desired_of(QA)
    _network, service, gateway = state.things["qa"]
    assert isinstance(service, DesiredService) and isinstance(gateway, DesiredGateway)
    assert service.spec.env["USER_URL"] == "https://user.example.invalid"
    assert service.spec.env["PAYMENT_URL"] == OCP["payment"]
    urls = gateway.table.variables(service.node, DEFAULT_VARIABLE)
    assert {"ACCOUNT_URL", "PAYMENT_URL", "USER_URL"} <= set(urls)
    assert {k: service.spec.env[k] for k in urls} == urls


def test_the_values_are_frozen() -> None:
    state = desired_of(QA)
    for thing in state.things["qa"]:
        with pytest.raises(AttributeError):
            thing.sandbox = "other"  # type: ignore[misc]


def test_the_plan_sends_the_specs_the_values_carry() -> None:
    state = desired_of(QA)
    specs = {t.spec.container: t.spec for t in state.things["qa"]
             if isinstance(t, DesiredService | DesiredGateway)}
    sent = {c.step.spec.container: c.step.spec for c in plan_pass(QA, nodes()).plan.changes
            if isinstance(c.step, DeployService | DeployGateway)}
    assert sent == specs


def test_a_sandbox_with_a_problem_gets_no_values_but_all_its_problems() -> None:
    broken = Desired(by_name(sandbox("qa", {"account": branch("nope"), "user": branch("gone")})))
    state = desired_of(broken)
    assert "qa" not in state.things
    assert state.blocked == frozenset({"qa"})
    assert sorted(p.path for p in state.problems) == ["services.account.branch",
                                                      "services.user.branch"]
