"""The sandbox page's CPU and memory charts in a real browser (Debian's Chromium, Playwright).

A fresh installation whose MICRO agent samples every 0.5 s. After the deploy, the open
sandbox page (``sdp-reconcile serve``) shows no samples; each later ``--once`` records what
the agents sampled, and the page's one SSE stream makes it refetch its live part: the inline
SVG charts appear, then grow, without a reload. The overview carries the sandbox's summary.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from playwright.sync_api import Browser, expect

from sdp_node.metricswire import MetricsResponse
from sdp_node.protocol import Credentials
from sdp_testbed.gitserver import GitServer
from sdp_testbed.waiting import wait_for
from tests.support.statedirs import commit_state, write_sandbox
from tests.web.stack import WebStack, build_stack
from tests.web.test_browser import browser, sign_in

__all__ = ["browser"]  # the fixture, shared with the other browser test

pytestmark = pytest.mark.browser


@pytest.fixture
def stack(tmp_path: Path, installation: str, git_server: GitServer, images: dict[str, str],
          canary: Credentials, docker_client: docker.DockerClient) -> Iterator[WebStack]:
    built = build_stack(tmp_path, installation=installation, git_server=git_server,
                        images=images, canary=canary,
                        micro_settings={"metrics_interval_seconds": 0.5})
    try:
        yield built
    finally:
        built.stop()


def sampled(stack: WebStack, suffix: str) -> int:
    """The account container's samples with a CPU figure (what its chart draws: the sample
    of a container still being created has none)."""
    answer = httpx.get(f"{stack.micro.url}/v1/metrics/containers",
                       headers={"Authorization": f"Bearer {stack.micro.token}"}, timeout=10)
    found = MetricsResponse.model_validate_json(answer.content)
    return next((sum(s.cpu_percent is not None for s in m.samples) for m in found.containers
                 if m.container.endswith(suffix)), 0)


def test_charts_render_and_follow_the_samples_live(
        stack: WebStack, browser: Browser, tmp_path: Path) -> None:
    sandbox = stack.name("QA-CHARTS")
    write_sandbox(stack.state, sandbox, extends="QA-DEFAULT",
                  services={"account": {"branch": "feature/login-error"}})
    commit_state(stack.state, f"{sandbox}: account on a branch",
                 author="Achmad <achmad@example.invalid>")
    first = stack.reconcile("once")
    assert first.returncode == 0, first.stdout + first.stderr
    suffix = f"-{sandbox.lower()}-account"
    serve, url = stack.start_serve(log=tmp_path / "serve.log")
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        sign_in(page, url, f"/sandboxes/{sandbox}")
        expect(page.locator("#live")).to_have_text("● live")
        resources = page.locator("section.resources")
        expect(resources).to_contain_text("No samples yet")
        page.evaluate("window.sdpMarker = 'not reloaded'")

        wait_for(lambda: sampled(stack, suffix) >= 3, what="three samples of account",
                 timeout=30)
        assert stack.reconcile("once").returncode == 0
        row = resources.locator("tr[data-service='account']")
        cpu = row.locator("svg.chart[data-kind='cpu']")
        memory = row.locator("svg.chart[data-kind='memory']")
        expect(cpu).to_be_visible(timeout=30_000)
        expect(memory).to_be_visible()
        expect(memory).to_have_attribute("aria-label", re.compile(
            r"Memory of account, last \d+ samples: now \d+(Ki|Mi)B? of \d+(Mi|Gi) \(\d+%\)"))
        expect(row.locator(".memory-now")).to_contain_text(" of ")
        expect(row.locator(".restarts")).to_have_text("0")
        expect(row.locator(".badge")).to_have_text("Healthy")
        before = int(cpu.get_attribute("data-points") or 0)
        assert before >= 3
        assert cpu.locator("polyline").count() == 1

        # More samples, another pass: the same open page shows the longer line.
        wait_for(lambda: sampled(stack, suffix) >= before + 4, what="more samples", timeout=30)
        assert stack.reconcile("once").returncode == 0
        page.wait_for_function(
            "n => Number(document.querySelector(\"tr[data-service='account'] "
            "svg.chart[data-kind='cpu']\").dataset.points) > n", arg=before, timeout=30_000)
        assert page.evaluate("window.sdpMarker") == "not reloaded"
        page.screenshot(path=str(tmp_path / "screenshot-charts.png"), full_page=True)

        page.goto(f"{url}/")
        load = page.locator(f"[data-sandbox-load='{sandbox}']")
        expect(load).to_contain_text("Healthy")
        expect(load).to_contain_text("CPU ")
        expect(load).to_contain_text("memory ")
        context.close()
    finally:
        serve.terminate()
        serve.wait(timeout=15)
