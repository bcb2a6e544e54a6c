"""The page says what started each pass: the interval, a state change, a webhook's branch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdp_reconciler.web import WebSettings
from tests.web.live import LivePage, start_live_page

EVIL = 'feature/<script>alert("x")</script>'


@pytest.fixture
def page(tmp_path: Path) -> Iterator[LivePage]:
    (tmp_path / "state").mkdir()
    live = start_live_page(tmp_path, WebSettings(poll_interval=0.05))
    try:
        yield live
    finally:
        live.server.stop()
        live.history.close()


def test_last_pass_and_history_show_the_trigger_escaped(page: LivePage) -> None:
    history = page.history
    first = history.start_pass(mode="watch", runner="ci", state_revision=None,
                               trigger="every 60s")
    history.finish_pass(first, status="CONVERGED", summary="Plan: nothing")
    trigger = f"webhook: account@{EVIL} (sandboxes QA-A on nodes micro-1)"
    second = history.start_pass(mode="watch", runner="ci", state_revision=None,
                                trigger=trigger)
    history.start_deployment(
        pass_id=second, step_id="s", sandbox="QA-A", service="account", node="micro-1",
        resource="sandbox-qa-a-account", action="update service", reason="branch moved",
        repository="account", branch="main", commit_sha="a" * 40, runner="ci",
        status="RUNNING")
    history.finish_pass(second, status="CONVERGED", summary="Plan: 1 to change")
    with page.client(timeout=10) as client:
        overview = client.get("/").text
        listing = client.get("/history").text
    escaped = "webhook: account@feature/&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
    assert f"(watch: {escaped} (sandboxes QA-A on nodes micro-1))" in overview
    assert "<script>alert" not in overview and "<script>alert" not in listing
    assert "Recent passes" in listing and "every 60s" in listing
    assert f"pass started by {escaped}" in listing
