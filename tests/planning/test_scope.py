"""A scoped pass (a webhook's) plans only its sandboxes and never touches any other's."""

from __future__ import annotations

from msgspec.structs import replace

from sdp_reconciler.planner.planning import plan
from sdp_reconciler.planner.scope import Scope, Tracking, Trigger, coalesce
from tests.planning.builders import (
    GATEWAY_NODE,
    HEADS,
    MICRO,
    Desired,
    as_ports_file,
    branch,
    by_name,
    converged,
    plan_pass,
    sandbox,
    sha,
)

A = sandbox("QA-A", {"account": branch("feature/login-error")})
B = sandbox("QA-B", {"account": branch("main")})
PINNED = sandbox("QA-P", {"account": branch("feature/login-error", commit=sha("0ddba11"))})


def test_a_scoped_plan_moves_its_sandbox_and_leaves_the_others_running() -> None:
    both = Desired(sandboxes=by_name(A, B))
    observed = converged(both)
    moved = {**HEADS, "account": {**HEADS["account"], "feature/login-error": sha("beef001"),
                                  "main": sha("beef002")}}
    scoped = replace(both, sandboxes=by_name(A), heads=moved)
    world = scoped.world(observed)
    full = plan_pass(scoped, observed)  # the same inputs, unscoped, would remove QA-B
    assert any(c.sandbox == "QA-B" and c.action.name == "REMOVE" for c in full.plan.changes)
    result = plan(sandboxes=scoped.sandboxes, world=world, placements=full.placements,
                  allocations=full.allocations, only=frozenset({"QA-A"}))
    assert result.changes, "the moved branch is deployed"
    assert {c.sandbox for c in result.changes} == {"QA-A"}
    assert all("beef001" in c.reason or c.subject.name == "ROUTES"
               for c in result.changes
               if c.service == "account" and not c.resource.endswith("--previous"))


def test_tracking_scopes_a_push_to_the_sandboxes_on_that_branch_and_their_nodes() -> None:
    desired = Desired(sandboxes=by_name(A, B, PINNED))
    done = plan_pass(desired, converged(desired))
    tracking = Tracking()
    tracking.update(desired.sandboxes, done.placements, full=True)
    assert tracking.known and tracking.repositories() == {"account", "erangel"}
    scope = tracking.scope_for("account", ["feature/login-error"])
    assert scope == Scope(frozenset({"QA-A"}), frozenset({MICRO, GATEWAY_NODE}))
    assert tracking.scope_for("account", ["nobody-tracks-this"]).sandboxes == frozenset()
    gateway = tracking.scope_for("erangel", ["develop"])
    assert gateway.sandboxes == {"QA-A", "QA-B", "QA-P"}  # a pinned service; its gateway moves
    # A scoped pass refreshes only its own sandboxes.
    tracking.update(by_name(replace(A, services={})), {}, full=False)
    assert tracking.scope_for("account", ["feature/login-error"]).sandboxes == frozenset()
    assert tracking.scope_for("account", ["main"]).sandboxes == {"QA-B"}


def test_a_burst_coalesces_without_dropping_a_push() -> None:
    one = Trigger("webhook", "webhook: account@a", Scope(frozenset({"A"}), frozenset({"m1"})),
                  sync=False)
    two = Trigger("webhook", "webhook: user@b", Scope(frozenset({"B"}), frozenset({"m2"})),
                  sync=False)
    merged = coalesce([one, two, one])
    assert merged.scope == Scope(frozenset({"A", "B"}), frozenset({"m1", "m2"}))
    assert merged.text == "webhook: account@a; webhook: user@b" and not merged.sync
    state = Trigger("state", "state changed (QA-A.yaml)")
    full = coalesce([one, state])
    assert full.scope is None and full.sync and full.kind == "webhook+state"


def test_a_scoped_pass_keeps_every_other_sandboxs_port_exactly_once() -> None:
    both = Desired(sandboxes=by_name(A, B))
    done = plan_pass(both, converged(both))
    ports_file = as_ports_file(done.allocations)
    scoped = replace(both, sandboxes=by_name(A), ports_file=ports_file)
    again = plan_pass(scoped, converged(both))  # allocate keeps QA-B's too, unconfirmed
    kept = Scope(frozenset({"QA-A"}), frozenset({MICRO})).allocations(again.allocations,
                                                                    ports_file)
    keys = [(a.sandbox, a.service) for a in kept]
    assert len(keys) == len(set(keys)) == len(done.allocations)
    assert as_ports_file(kept) == ports_file


def test_a_push_scope_includes_the_infra_nodes_holding_the_sandboxs_data() -> None:
    desired = Desired(sandboxes=by_name(A, B))
    done = plan_pass(desired, converged(desired))
    tracking = Tracking()
    tracking.update(desired.sandboxes, done.placements, full=True,
                    data_nodes=[("QA-A", "infra-1"), ("QA-B", "infra-2")])
    scope = tracking.scope_for("account", ["feature/login-error"])
    assert scope.nodes == {MICRO, GATEWAY_NODE, "infra-1"}
