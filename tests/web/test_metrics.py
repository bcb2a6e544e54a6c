"""``/metrics`` of the reconciler's listener: Prometheus text format read from the history.

Over the deployed installation (one pass: ``ok`` converged, ``broken`` failed its go build,
``sleepy`` suspended). Parsed with prometheus_client's own parser; the names are the ones
docs/operations.md lists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.web.conftest import Deployed, sign_in

TOKEN = "metrics-token-for-tests"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def scrape(client: TestClient, **headers: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def test_a_scraper_with_the_token_gets_the_documented_metrics(
    make_app: Callable[..., Starlette], deployed: Deployed,
) -> None:
    app = make_app(env={**deployed.stack.env, "SDP_METRICS_TOKEN": TOKEN})
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code \
            == 401
        found = scrape(client, Authorization=f"Bearer {TOKEN}")
    assert found["sdp_passes_total"] == [({"result": "NOT_CONVERGED"}, 1.0)]
    assert dict((tuple(labels.items()), value) for labels, value in found[
        "sdp_pass_duration_seconds_bucket"])[(("le", "+Inf"),)] == 1.0
    assert found["sdp_pass_duration_seconds_count"] == [({}, 1.0)]
    assert found["sdp_last_pass_duration_seconds"][0][1] > 0
    applied = {labels["action"]: value for labels, value in found["sdp_changes_applied_total"]}
    assert applied.get("create", 0) >= 3  # networks, services, gateways of the converged ones
    failures = {labels["reason"]: value for labels, value in found["sdp_change_failures_total"]}
    assert failures == {"go build": 1.0}, failures
    sandboxes = {(labels["sync"], labels["health"]): value
                 for labels, value in found["sdp_sandboxes"]}
    assert sandboxes[("InSync", "Suspended")] == 1.0 and sum(sandboxes.values()) == 3.0
    assert found["sdp_sse_streams"] == [({}, 0.0)]
    hooks = {labels["result"]: value for labels, value in found["sdp_webhook_requests_total"]}
    assert hooks["queued"] == hooks["unauthorized"] == 0.0  # no webhook endpoint here
    # every name the exposition carries is documented, and every documented one is carried
    documented = set(re.findall(r"`(sdp_[a-z_]+)`", DOCS.read_text()))
    carried = {re.sub(r"_(bucket|count|sum)$", "", n) for n in found}
    reconciler = {n for n in documented if not n.startswith("sdp_agent_")}
    assert carried <= documented, carried - documented
    assert reconciler - {"sdp_container_cpu_percent", "sdp_container_memory_bytes",
                         "sdp_container_memory_limit_bytes"} <= carried, reconciler - carried


def test_a_viewer_signed_in_may_read_it_too(make_app: Callable[..., Starlette]) -> None:
    with TestClient(make_app()) as client:
        assert client.get("/metrics").status_code == 401  # no token configured, no session
        assert sign_in(client).status_code == 303
        assert "sdp_passes_total" in scrape(client)


def test_the_grafana_dashboard_uses_only_documented_names() -> None:
    dashboard = json.loads((DOCS.parent / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\b(sdp_[a-z_]+?)(?:_bucket|_total)?\b", target["expr"])}
    documented = set(re.findall(r"`(sdp_[a-z_]+)`", DOCS.read_text()))
    documented |= {re.sub(r"_total$", "", n) for n in documented}
    assert used and used <= documented, used - documented


def test_the_webhook_endpoints_outcomes_are_counted(make_app: Callable[..., Starlette],
                                                     deployed: Deployed) -> None:
    from sdp_reconciler.web.hooks import HookCounters

    app = make_app(env={**deployed.stack.env, "SDP_METRICS_TOKEN": TOKEN})
    counters = HookCounters()
    for outcome in ("queued", "queued", "unauthorized", "rate_limited"):
        counters.add(outcome)
    app.state.hook_counters = counters  # as watch sets it beside its webhook endpoint
    with TestClient(app) as client:
        found = scrape(client, Authorization=f"Bearer {TOKEN}")
    hooks = {labels["result"]: value for labels, value in found["sdp_webhook_requests_total"]}
    assert (hooks["queued"], hooks["unauthorized"], hooks["rate_limited"], hooks["ignored"]) == (
        2.0, 1.0, 1.0, 0.0)
