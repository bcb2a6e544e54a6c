"""``<SERVICE>_URL`` variables: read from the same route table the gateway gets.

A container of a sandbox is told, for every key its gateway routes, where that service is: by
Docker DNS on the sandbox network when it runs in the sandbox on the same node, else the OCP
value of the gateway's commit, else the explicit target; a route change is a spec change.
"""

from __future__ import annotations

from msgspec.structs import replace

from sdp_node.protocol import DeployGateway, DeployService
from sdp_reconciler.planner.placement import place
from sdp_reconciler.planner.planning import plan
from sdp_reconciler.planner.ports import allocate
from sdp_reconciler.state.models import NodeType
from sdp_reconciler.state.servicevars import pattern_problem, variable_name
from tests.planning.builders import (
    HEADS,
    NOW,
    OCP,
    Desired,
    branch,
    by_name,
    converged,
    desired_spec,
    environment,
    go_repository,
    node,
    nodes,
    ocp,
    plan_pass,
    sandbox,
    sha,
    target,
)

STAGING = "https://user.staging.company.invalid"


def qa(**services: object) -> Desired:
    return Desired(by_name(sandbox("qa", {  # type: ignore[arg-type]
        "account": branch("main"), "payment": branch("main"), "user": ocp(), **services})))


def test_every_key_the_gateway_routes_becomes_a_variable() -> None:
    spec = desired_spec(qa(user=target(STAGING)), "qa", "account")
    assert {k: v for k, v in spec.env.items() if k.endswith("_URL")} == {
        "ACCOUNT_URL": "http://account:8080",      # itself, by its alias on the network
        "PAYMENT_URL": "http://payment:8080",      # in the sandbox, same node: Docker DNS
        "USER_URL": STAGING,                       # the explicit target
        "LEDGER_URL": OCP["ledger"],               # not in the sandbox: the commit's value
    }
    assert desired_spec(qa(), "qa", "account").env["USER_URL"] == OCP["user"]


def test_the_gateway_gets_the_same_table_through_its_published_ports() -> None:
    result = plan_pass(qa(), converged(qa())).plan
    assert result.empty, result.render()
    gateway = next(c for c in plan_pass(qa(), nodes()).plan.changes
                   if isinstance(c.step, DeployGateway))
    routes = {r.key: (r.url, r.kind) for r in gateway.routes}
    assert routes == {"account": ("http://10.0.0.1:9001", "sandbox"),
                      "payment": ("http://10.0.0.1:9002", "sandbox"), "user": (None, "ocp")}


def test_a_service_on_another_node_is_reached_at_its_published_port() -> None:
    micro_2 = node("micro-2", NodeType.MICRO, "10.0.0.3", (9101, 9110))
    observed = nodes(micro_repositories=("account", "user"),
                     extra={micro_2: [go_repository("payment")]})
    result = plan_pass(qa(), observed).plan
    specs = {c.step.spec.service: c.step.spec for c in result.changes
             if isinstance(c.step, DeployService)}
    assert specs["account"].env["PAYMENT_URL"] == "http://10.0.0.3:9101"
    assert specs["payment"].env["ACCOUNT_URL"] == "http://10.0.0.1:9001"
    assert specs["payment"].env["PAYMENT_URL"] == "http://payment:8080"


def test_a_route_change_is_a_spec_change_that_plan_names() -> None:
    result = plan_pass(qa(payment=ocp()), converged(qa())).plan
    account = next(c for c in result.changes if c.resource == "sandbox-qa-account")
    assert account.reason == "spec changed: env PAYMENT_URL"
    assert isinstance(account.step, DeployService)
    assert account.step.spec.env["PAYMENT_URL"] == OCP["payment"]


def test_a_new_gateway_commit_with_other_ocp_values_changes_the_variables() -> None:
    moved = sha("9a7e4a8")
    heads = {**HEADS, "erangel": {"develop": moved}}
    observed = converged(qa())
    observed.committed_routes_at[moved] = {**OCP, "user": "https://user.ocp2.company.invalid"}
    result = plan_pass(replace(qa(), heads=heads), observed).plan
    reasons = {c.resource: c.reason for c in result.changes}
    assert reasons["sandbox-qa-account"] == "spec changed: env USER_URL"
    assert reasons["sandbox-qa-payment"] == "spec changed: env USER_URL"


def test_an_environment_variable_of_the_same_name_wins() -> None:
    desired = replace(
        Desired(by_name(sandbox("qa", {"account": branch("main"), "payment": branch("main")},
                                environment="qa-env"))),
        environments={"qa-env": environment("qa-env", {"PAYMENT_URL": "http://mock:1"})})
    assert desired_spec(desired, "qa", "account").env["PAYMENT_URL"] == "http://mock:1"


def test_unknown_route_values_leave_the_sandbox_as_is() -> None:
    observed = converged(qa())
    moved = sha("9a7e4a8")
    observed.committed_routes.pop("erangel")
    result = plan_pass(replace(qa(), heads={**HEADS, "erangel": {"develop": moved}}),
                       observed).plan
    assert "qa" in result.blocked
    assert result.changes == ()
    assert any("route values of erangel at 9a7e4a8 are unknown" in p.message
               for p in result.problems), result.problems


def test_variable_names_and_their_pattern() -> None:
    assert variable_name("{SERVICE}_URL", "payment-api") == "PAYMENT_API_URL"
    assert variable_name("SDP_{SERVICE}", "user") == "SDP_USER"
    assert pattern_problem("{SERVICE}_URL") is None
    assert "exactly once" in (pattern_problem("URL") or "")
    assert "valid environment variable" in (pattern_problem("{SERVICE}-URL") or "")


def test_variables_can_be_turned_off() -> None:
    desired = qa()
    observed = nodes()
    world = replace(desired.world(observed), service_url_variable=None)
    placements, _ = place(desired.sandboxes, world, ())
    allocations, _ = allocate(sandboxes=desired.sandboxes, placements=placements, existing=(),
                              world=world, now=NOW)
    result = plan(sandboxes=desired.sandboxes, world=world, placements=placements,
                  allocations=allocations)
    envs = [c.step.spec.env for c in result.changes if isinstance(c.step, DeployService)]
    assert envs and all(not any(k.endswith("_URL") for k in env) for env in envs)
