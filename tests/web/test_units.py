"""The page's pure parts: stage rules, sandbox summaries, the throttle, names and addresses."""

from __future__ import annotations

from typing import Any

import pytest

from sdp_reconciler.cli.main import build_parser
from sdp_reconciler.errors import SdpError
from sdp_reconciler.web.rendering import tone, utc_text
from sdp_reconciler.web.server import parse_listen
from sdp_reconciler.web.sessions import LoginThrottle
from sdp_reconciler.web.views import deployment_views, sandbox_summaries


def event(kind: str, *, stage: str | None = None, name: str | None = None,
          state: str | None = None, message: str = "", deployment: int = 1) -> dict[str, Any]:
    return {"deployment_id": deployment, "kind": kind, "stage": stage, "event": name,
            "state": state, "message": message}


def deployment_row(**values: Any) -> dict[str, Any]:
    row = {"id": 1, "pass_id": 1, "resource": "sandbox-s-account", "service": "account",
           "node": "micro-1", "action": "create service", "reason": "new sandbox",
           "status": "QUEUED", "message": "", "branch": "main", "commit_sha": "a" * 40,
           "started_at": "2026-01-01T00:00:00.000+00:00", "completed_at": None}
    row.update(values)
    return row


def test_stages_follow_the_agent_events_in_order() -> None:
    events = [
        event("state", state="QUEUED"),
        event("event", stage="git fetch", name="FETCH_STARTED"),
        event("log", stage="git fetch", message="fetched"),
        event("event", stage="git fetch", name="FETCH_COMPLETED"),
        event("event", stage="git checkout", name="CHECKOUT_STARTED"),
        event("event", stage="git checkout", name="CHECKOUT_COMPLETED"),
        event("event", stage="go build", name="BUILD_STARTED"),
    ]
    [view] = deployment_views([deployment_row()], events)
    assert [(s.mark, s.name) for s in view.stages] == [
        ("✓", "git fetch"), ("✓", "git checkout"), ("…", "go build")]
    assert view.state == "QUEUED" and not view.finished


def test_a_failure_marks_its_stage_and_the_outcome_with_the_reason() -> None:
    events = [
        event("event", stage="go build", name="BUILD_STARTED"),
        event("event", stage="go build", name="DEPLOY_FAILED", message="exit 2"),
        event("state", state="FAILED", message="go build of account failed (exit 2)"),
    ]
    [view] = deployment_views([deployment_row()], events)
    assert (view.stages[0].status, view.stages[0].message) == ("failed", "exit 2")
    assert view.state == "FAILED" and view.message == "go build of account failed (exit 2)"


def test_a_failure_without_a_stage_is_named_deploy() -> None:
    [view] = deployment_views([deployment_row()], [event("event", name="DEPLOY_FAILED",
                                                         message="node lost")])
    assert view.stages[0].name == "deploy" and view.stages[0].mark == "✗"


def test_a_finished_deployment_takes_its_recorded_status_and_message() -> None:
    row = deployment_row(status="RUNNING", message="subnet 10.0.0.0/27",
                         completed_at="2026-01-01T00:00:01.000+00:00")
    [view] = deployment_views([row], [event("state", state="QUEUED")])
    assert view.state == "RUNNING" and view.message == "subnet 10.0.0.0/27" and view.finished


def test_events_of_other_deployments_are_ignored() -> None:
    [view] = deployment_views([deployment_row()], [event("state", state="FAILED",
                                                         deployment=2)])
    assert view.state == "QUEUED"


def status_row(sandbox: str, service: str, **values: Any) -> dict[str, Any]:
    row = {"sandbox": sandbox, "service": service, "node": None, "sync": "InSync",
           "health": "Healthy", "reason": "UpToDate", "message": "", "branch": None,
           "attempted_commit": None, "applied_commit": None, "port": None, "url": None,
           "route": None, "updated_at": "2026-01-01T00:00:00.000+00:00"}
    row.update(values)
    return row


def test_summaries_combine_the_status_rows_of_each_sandbox() -> None:
    rows = [
        status_row("S", "", url="http://10.0.0.1:8080", route="QA-DEFAULT"),
        status_row("S", "gateway", node="gw", branch="develop", port=8080,
                   applied_commit="b" * 40, url="http://10.0.0.1:8080"),
        status_row("S", "account", node="m", branch="x", port=9001, route="sandbox",
                   applied_commit="c" * 40, url="http://h:9001"),
        status_row("S", "payment", route="ocp", reason="RoutedToOCP"),
        status_row("GONE", "", sync="OutOfSync"),
    ]
    summaries = {s.name: s for s in sandbox_summaries(rows, {})}
    summary = summaries["S"]
    assert summary.gateway_url == "http://10.0.0.1:8080" and summary.reconciled
    assert summary.gateway is not None and summary.gateway.port == 8080
    assert [(s.service, s.route_label) for s in summary.services] == [
        ("account", "sandbox"), ("payment", "OCP")]
    assert summaries["GONE"].reason == "NotInState"


def test_a_suspended_health_marks_the_sandbox_suspended() -> None:
    [summary] = sandbox_summaries([status_row("S", "", health="Suspended")], {})
    assert summary.suspended


def test_the_throttle_counts_per_user_and_per_address_in_a_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_user=2, per_address=3, window=60, clock=lambda: now[0])
    throttle.failed("Alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.9") == 0
    throttle.failed("alice", "10.0.0.2")
    assert throttle.retry_after("ALICE", "10.0.0.9") == pytest.approx(60)
    throttle.failed("bob", "10.0.0.1")
    throttle.failed("carol", "10.0.0.1")
    assert throttle.retry_after("dave", "10.0.0.1") > 0
    now[0] = 61
    assert throttle.retry_after("alice", "10.0.0.1") == 0
    throttle.failed("alice", "10.0.0.5")
    throttle.succeeded("alice")
    assert throttle.retry_after("alice", "10.0.0.5") == 0


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:3452", ("127.0.0.1", 3452)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:3452", ("::1", 3452)),
])
def test_listen_addresses(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["3452", "host:", ":3452", "host:99999", "host:x", "host:²",
                                   "host:" + "9" * 5000, "host:-1"])
def test_bad_listen_addresses_are_refused(value: str) -> None:
    with pytest.raises(SdpError, match="listen address"):
        parse_listen(value)


def test_every_status_word_has_a_tone_and_keeps_its_text() -> None:
    assert tone("Healthy") == "ok" and tone("Degraded") == "warn" and tone("FAILED") == "bad"
    assert tone("Suspended") == "muted" and tone(None) == "muted"
    assert utc_text("2026-11-29T15:51:02.443+00:00") == "2026-11-29 15:51:02 UTC"


def test_serve_takes_state_and_history_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--state", "S", "--history", "H", "serve"])
    assert (before.state, before.history) == ("S", "H")
    after = parser.parse_args(["serve", "--state", "S2", "--history", "H2", "--listen",
                               "0.0.0.0:9"])
    assert (after.state, after.history, after.listen) == ("S2", "H2", "0.0.0.0:9")
    assert not hasattr(parser.parse_args(["serve"]), "listen")
