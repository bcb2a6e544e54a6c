"""Zero-drop switches and remembered failures, as the planner and the applier see them.

A running service whose spec changed gets a spare port, its route follows it once it is
healthy, and its previous instance is retired in the cleanup phase only when the deploy and the
sandbox's routes succeeded. An interrupted switch is finished before anything else. A deploy the
node remembers as failed is not planned again until the branch moves or a restart asks.
"""

from __future__ import annotations

from msgspec.structs import replace

from sdp_node.protocol import DeployService, FailureReason, RetireContainer
from sdp_reconciler.apply.status import status_rows
from sdp_reconciler.planner.plan import Action, Phase
from tests.planning.builders import (
    HEADS,
    MICRO,
    Desired,
    branch,
    by_name,
    converged,
    ocp,
    plan_pass,
    reconcile_once,
    sandbox,
    sha,
)
from tests.planning.fakes import InMemoryNodes

ACCOUNT, GW = "sandbox-qa-account", "sandbox-qa-gateway"
BASE = Desired(by_name(sandbox("qa", {"account": branch("main"), "payment": ocp()})))
NEW = sha("e4f5a6b")
MOVED = replace(BASE, heads={**HEADS, "account": {"main": NEW}})


def account(observed: InMemoryNodes, name: str = ACCOUNT) -> tuple[str, str] | None:
    found = observed.nodes[MICRO].containers.get(name)
    return (found.labels["sdp.commit"], found.labels["sdp.port"]) if found else None


def live_route(observed: InMemoryNodes) -> str:
    gateway = observed.gateway(GW)
    assert gateway is not None
    return gateway.live_routes["account"]


def test_a_switch_moves_the_service_to_a_spare_port_then_its_route_then_retires() -> None:
    observed = converged(BASE)
    assert account(observed) == (HEADS["account"]["main"], "9001")
    result, outcome, after = reconcile_once(MOVED, observed)
    assert all(r.ok for r in outcome.results.values())
    deploy = next(c for c in result.plan.changes if isinstance(c.step, DeployService))
    retire = next(c for c in result.plan.changes if isinstance(c.step, RetireContainer))
    assert deploy.step.spec.port == 9002 and retire.phase is Phase.CLEANUP
    assert account(observed) == (NEW, "9002")
    assert account(observed, ACCOUNT + "--previous") is None, "retired"
    assert live_route(observed) == "http://10.0.0.1:9002"
    # The allocation follows the serving container: the next pass has nothing to do.
    assert plan_pass(after, observed).plan.empty
    # A second switch takes the lowest spare port again: the service's first one, now free.
    moved_again = replace(after, heads={**HEADS, "account": {"main": sha("0ddba11")}})
    reconcile_once(moved_again, observed)
    assert account(observed) == (sha("0ddba11"), "9001")


def test_a_failed_switch_keeps_the_old_container_and_its_route_and_retires_nothing() -> None:
    observed = converged(BASE)
    before = account(observed)
    result, outcome, _ = reconcile_once(MOVED, observed, failing={ACCOUNT})
    retire = next(c for c in result.plan.changes if isinstance(c.step, RetireContainer))
    assert retire.step_id not in outcome.results, "a retire waits for its deploy"
    assert account(observed) == before
    assert live_route(observed) == "http://10.0.0.1:9001"


def test_an_interrupted_switch_moves_the_routes_and_retires_before_switching_again() -> None:
    observed = converged(BASE)
    # The agent confirmed the new container and renamed it into place, then died: the old one
    # still serves as --previous and the route still points at it.
    old = observed.nodes[MICRO].containers[ACCOUNT]
    observed.nodes[MICRO].containers[ACCOUNT + "--previous"] = old.model_copy(
        update={"name": ACCOUNT + "--previous", "aside": True})
    observed.nodes[MICRO].containers[ACCOUNT] = old.model_copy(update={"labels": {
        **old.labels, "sdp.commit": NEW, "sdp.port": "9002", "sdp.spec": "interrupted"}})
    newer = replace(MOVED, heads={**HEADS, "account": {"main": sha("0ddba11")}})
    result = plan_pass(newer, observed).plan
    kinds = [(c.action, type(c.step).__name__) for c in result.changes]
    assert kinds == [(Action.UPDATE, "SetRoutes"), (Action.REMOVE, "RetireContainer")], \
        result.render()
    assert result.changes[0].step.routes["account"] == "http://10.0.0.1:9002"  # type: ignore[union-attr]
    observed.apply(result)
    assert account(observed, ACCOUNT + "--previous") is None
    # The next pass switches to the newer commit.
    assert any(isinstance(c.step, DeployService) for c in plan_pass(newer, observed).plan.changes)


def test_a_remembered_failure_is_not_planned_again_until_the_branch_moves_or_a_restart() -> None:
    observed = converged(BASE)
    attempted = next(c.step.spec for c in plan_pass(MOVED, observed).plan.changes
                     if isinstance(c.step, DeployService))
    observed.remember_failure(MICRO, attempted, FailureReason.HEALTH_CHECK_FAILED)
    again = plan_pass(MOVED, observed)
    assert again.plan.empty, again.plan.render()
    rows = {r.service: r for r in status_rows(
        sandboxes=MOVED.sandboxes, plan=again.plan, outcome=None, world=again.world,
        placements=again.placements, allocations=again.allocations) if r.sandbox == "qa"}
    row = rows["account"]
    assert (row.sync, row.health, row.reason) == ("OutOfSync", "Degraded", "HealthCheckFailed")
    assert row.attempted_commit == NEW and row.applied_commit == HEADS["account"]["main"]
    assert "HTTP 500" in row.message and "listening on :8080" in row.message
    assert "not retried" in row.message
    assert rows[""].reason == "HealthCheckFailed"
    # A restart asks for it again; so does a moved branch.
    restart = replace(MOVED, restarts=frozenset({("qa", "account")}))
    assert any(isinstance(c.step, DeployService) for c in plan_pass(restart, observed).plan.changes)
    moved = replace(MOVED, heads={**HEADS, "account": {"main": sha("0ddba11")}})
    assert any(isinstance(c.step, DeployService) for c in plan_pass(moved, observed).plan.changes)
