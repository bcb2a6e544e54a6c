"""``status.status_rows``: sync, health, reason and attempted vs applied commit after a pass.

Each test runs a real pass on ``InMemoryNodes`` (plan, then apply with some steps failing) and
reads the rows the page and ``--once`` show. Rows are compared on the fields that matter.
"""

from __future__ import annotations

from msgspec.structs import replace

from sdp_reconciler.apply.applying import ApplyOutcome
from sdp_reconciler.apply.status import held_rows, status_rows
from sdp_reconciler.history import StatusRow
from tests.planning.builders import (
    HEADS,
    MICRO,
    Desired,
    Pass,
    branch,
    by_name,
    converged,
    nodes,
    ocp,
    plan_pass,
    sandbox,
    sha,
    target,
)
from tests.planning.fakes import InMemoryNodes

OLD, NEW = sha("a1b2c3d"), sha("e4f5a6b")
GATEWAY_COMMIT = sha("9a7e4a7")
STAGING = "https://user.staging.company.invalid"
QA = Desired(by_name(sandbox("qa", {"account": branch("main"), "payment": ocp(),
                                    "user": target(STAGING)})))
MOVED = replace(QA, heads={**HEADS, "account": {"main": NEW}})


def rows_after(desired: Desired, observed: InMemoryNodes, *, failing: set[str] | None = None,
               applied: bool = True) -> dict[str, StatusRow]:
    """service ('' for the sandbox row) -> row, after applying (or only planning) a pass."""
    result: Pass = plan_pass(desired, observed)
    outcome: ApplyOutcome | None = None
    if applied:
        outcome = observed.apply(result.plan, failing=failing or set())
    found = status_rows(
        sandboxes=desired.sandboxes, plan=result.plan, outcome=outcome, world=result.world,
        placements=result.placements, allocations=result.allocations,
    )
    assert {r.sandbox for r in found} <= set(desired.sandboxes)
    return {r.service: r for r in found if r.sandbox == "qa"}


def facts(row: StatusRow) -> tuple[str, str, str, str | None, str | None]:
    return (row.sync, row.health, row.reason, row.attempted_commit, row.applied_commit)


def test_a_failed_deploy_leaves_the_old_commit_applied_and_the_new_one_attempted() -> None:
    rows = rows_after(MOVED, converged(QA), failing={"sandbox-qa-account"})
    assert facts(rows["account"]) == ("OutOfSync", "Degraded", "DeployFailed", NEW, OLD)
    assert rows["account"].message == "failed on purpose"
    assert (rows[""].sync, rows[""].health, rows[""].reason) == (
        "OutOfSync", "Degraded", "DeployFailed")
    assert rows[""].message == "account: failed on purpose"


def test_a_failed_first_deploy_is_unhealthy_with_nothing_applied() -> None:
    rows = rows_after(QA, nodes(), failing={"sandbox-qa-account"})
    assert facts(rows["account"]) == ("OutOfSync", "Unhealthy", "DeployFailed", OLD, None)
    assert facts(rows["gateway"]) == ("InSync", "Healthy", "Deployed", GATEWAY_COMMIT,
                                      GATEWAY_COMMIT)


def test_a_successful_deploy_is_in_sync_with_the_new_commit_applied() -> None:
    rows = rows_after(MOVED, converged(QA))
    assert facts(rows["account"]) == ("InSync", "Healthy", "Deployed", NEW, NEW)
    assert rows["account"].message == "branch moved a1b2c3d→e4f5a6b"
    assert (rows["account"].port, rows["account"].url) == (9001, "http://10.0.0.1:9001")
    assert rows["gateway"].url == "http://gw.example.test:8080", "people use the public address"
    assert facts(rows[""])[:3] == ("InSync", "Healthy", "UpToDate")


def test_nothing_to_do_is_up_to_date() -> None:
    rows = rows_after(QA, converged(QA))
    assert facts(rows["account"]) == ("InSync", "Healthy", "UpToDate", OLD, OLD)
    assert facts(rows[""])[:3] == ("InSync", "Healthy", "UpToDate")


def test_planned_but_not_applied_is_progressing() -> None:
    rows = rows_after(MOVED, converged(QA), applied=False)
    assert facts(rows["account"]) == ("OutOfSync", "Progressing", "ChangesPending", NEW, OLD)


def test_suspended_sandbox() -> None:
    suspended = Desired(by_name(replace(QA.sandboxes["qa"], lifecycle=QA.sandboxes[
        "qa"].lifecycle.model_copy(update={"suspended": True}))))
    observed = converged(QA)
    rows = rows_after(suspended, observed)
    assert (rows["account"].health, rows["account"].reason) == ("Suspended", "Suspended")
    assert (rows["gateway"].health, rows["gateway"].reason) == ("Suspended", "Suspended")
    assert (rows[""].sync, rows[""].health, rows[""].reason) == (
        "InSync", "Suspended", "Suspended")
    again = rows_after(suspended, observed)
    assert (again[""].health, again[""].reason) == ("Suspended", "Suspended")


def test_blocked_sandbox_is_a_state_problem_naming_it() -> None:
    broken = Desired(by_name(sandbox("qa", {"account": branch("feature/nope"),
                                            "payment": ocp(), "user": target(STAGING)})))
    rows = rows_after(broken, converged(QA))
    assert (rows["account"].sync, rows["account"].reason) == ("OutOfSync", "StateProblem")
    assert "branch 'feature/nope' does not exist" in rows["account"].message
    assert rows["account"].applied_commit == OLD, "what runs is still reported"
    assert (rows[""].sync, rows[""].reason) == ("OutOfSync", "StateProblem")


def test_blocked_by_an_unreachable_node() -> None:
    observed = converged(QA)
    observed.make_unreachable(MICRO)
    rows = rows_after(QA, observed)
    assert (rows["account"].sync, rows["account"].reason) == ("OutOfSync", "StateProblem")
    assert "unreachable" in rows["account"].message


def test_ocp_and_target_routed_services() -> None:
    rows = rows_after(QA, converged(QA))
    payment, user = rows["payment"], rows["user"]
    assert (payment.sync, payment.health, payment.reason, payment.route, payment.url) == (
        "InSync", "Healthy", "RoutedToOCP", "ocp", None)
    assert (user.sync, user.health, user.reason, user.route, user.url) == (
        "InSync", "Healthy", "RoutedToTarget", "target", STAGING)
    assert payment.node is None and payment.port is None


def test_restart_is_reported_as_restarted() -> None:
    rows = rows_after(replace(QA, restarts=frozenset({("qa", "account")})), converged(QA))
    assert facts(rows["account"]) == ("InSync", "Healthy", "Restarted", OLD, OLD)


def test_a_service_stopped_by_hand_and_started_again() -> None:
    observed = converged(QA)
    observed.stop_by_hand("sandbox-qa-account")
    rows = rows_after(QA, observed)
    assert facts(rows["account"])[:3] == ("InSync", "Healthy", "Started")


def test_a_failed_route_change_is_out_of_sync() -> None:
    observed = converged(QA)
    observed.edit_routes_by_hand("sandbox-qa-gateway", payment_url="http://10.9.9.9:1")
    result = plan_pass(QA, observed)
    (routes,) = result.plan.changes
    outcome = ApplyOutcome(errors={routes.step_id: "agent unreachable"})
    rows = {r.service: r for r in status_rows(
        sandboxes=QA.sandboxes, plan=result.plan, outcome=outcome, world=result.world,
        placements=result.placements, allocations=result.allocations)}
    assert rows["gateway"].sync == "OutOfSync"
    assert rows[""].sync == "OutOfSync"


def test_a_running_service_whose_health_endpoint_fails_is_degraded() -> None:
    observed = converged(QA)
    node = observed.nodes[MICRO]
    account = node.containers["sandbox-qa-account"]
    node.containers["sandbox-qa-account"] = account.model_copy(
        update={"health_check": "HTTP 503"})
    rows = rows_after(QA, observed)
    assert facts(rows["account"])[:3] == ("InSync", "Degraded", "HealthCheckFailing")
    assert rows["account"].message == "health check: HTTP 503"
    assert facts(rows[""])[:3] == ("InSync", "Degraded", "HealthCheckFailing")
    assert rows[""].message == "account: health check: HTTP 503"


def test_a_gateway_url_only_where_a_gateway_runs() -> None:
    """No URL to point an app at where nothing answers: not before the first deploy, not
    after a failed first deploy, not while suspended or stopped; the old gateway's URL while a
    failed update leaves it serving."""
    assert rows_after(QA, nodes(), applied=False)["gateway"].url is None
    assert rows_after(QA, nodes(), applied=False)[""].url is None
    failed_first = rows_after(QA, nodes(), failing={"sandbox-qa-gateway"})
    assert (failed_first["gateway"].url, failed_first[""].url) == (None, None)
    suspended = Desired(by_name(replace(QA.sandboxes["qa"], lifecycle=QA.sandboxes[
        "qa"].lifecycle.model_copy(update={"suspended": True}))))
    rows = rows_after(suspended, converged(QA))
    assert (rows["gateway"].url, rows[""].url) == (None, None)
    assert rows_after(suspended, converged(QA))["gateway"].url is None, "already stopped"
    moved_gateway = replace(QA, heads={**HEADS, "erangel": {"develop": sha("0d0d0d0")}})
    serving = rows_after(moved_gateway, converged(QA), failing={"sandbox-qa-gateway"})
    assert serving["gateway"].reason == "DeployFailed"
    assert serving["gateway"].url == serving[""].url == "http://gw.example.test:8080"
    assert rows_after(QA, nodes())[""].url == "http://gw.example.test:8080"


def test_a_held_sandbox_has_a_gateway_url_only_while_its_gateway_runs() -> None:
    observed = converged(QA)

    def held() -> dict[str, StatusRow]:
        return {r.service: r for r in held_rows({"qa": ("not authorised",)}, QA.world(observed))}

    assert held()["gateway"].url == held()[""].url == "http://gw.example.test:8080"
    observed.stop_by_hand("sandbox-qa-gateway")
    assert (held()["gateway"].url, held()[""].url) == (None, None)
