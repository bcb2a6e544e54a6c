"""The page in a real browser: Debian's Chromium, headless, driven by Playwright.

``sdp-reconcile serve`` runs as a subprocess over a fresh installation. The browser signs in
with the Bitbucket canary account (checked through the gateway agent), opens a sandbox that
was never deployed, and only then a separate ``sdp-reconcile --once`` process deploys it: the
stages (✓ git fetch … ✓ routes, then RUNNING) and the log lines must appear on the open page
without a reload. Then the same pages are checked on a phone-sized screen (no horizontal
scrolling) and in a far-away time zone (times in the viewer's local time).

The screenshot is saved under the test's tmp directory, and also to ``docs/`` when
``SDP_SAVE_SCREENSHOTS=1`` (how ``docs/screenshot-sandbox.png`` is made).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import docker
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from sdp_node.protocol import Credentials
from sdp_testbed.gitserver import GitServer
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.support.names import PREFIX
from tests.support.statedirs import commit_state, write_sandbox
from tests.web.stack import WebStack, build_stack

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
ZONE = "Asia/Kolkata"


@pytest.fixture
def stack(tmp_path: Path, installation: str, git_server: GitServer, images: dict[str, str],
          canary: Credentials, docker_client: docker.DockerClient) -> Iterator[WebStack]:
    built = build_stack(tmp_path, installation=installation, git_server=git_server,
                        images=images, canary=canary)
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("no Chromium at /usr/bin/chromium: apt-get install chromium (.ci/run "
                    "installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        yield launched
        launched.close()


def sign_in(page: Page, url: str, target: str) -> None:
    page.goto(f"{url}{target}")
    expect(page).to_have_url(f"{url}/login?next={target.replace('/', '%2F')}")
    page.get_by_label("Username").fill(CANARY_USER)
    page.get_by_label("Password").fill(CANARY_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}{target}")


def card(page: Page, resource: str) -> Locator:
    return page.locator(".deployment", has=page.locator(".resource", has_text=resource))


def test_a_deploy_appears_live_on_the_open_sandbox_page(
        stack: WebStack, browser: Browser, tmp_path: Path) -> None:
    sandbox = stack.name("QA-LOGIN-ERROR")
    write_sandbox(stack.state, sandbox, extends="QA-DEFAULT",
                  services={"account": {"branch": "feature/login-error"}})
    commit_state(stack.state, f"{sandbox}: account on feature/login-error",
                 author="Achmad <achmad@example.invalid>")
    serve, url = stack.start_serve(log=tmp_path / "serve.log")
    once: subprocess.Popen[bytes] | None = None
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000},
                                      timezone_id=ZONE, locale="en-GB")
        page = context.new_page()
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url)
                if frame == page.main_frame else None)
        sign_in(page, url, f"/sandboxes/{sandbox}")
        expect(page.locator("h1")).to_have_text(sandbox)
        expect(page.get_by_text("Nothing deployed yet.")).to_be_visible()
        expect(page.locator("#live")).to_have_text("● live")
        page.evaluate("window.sdpMarker = 'not reloaded'")
        loaded = len(navigations)

        once = stack.start_reconcile("once", log=tmp_path / "once.log")
        account = card(page, f"{PREFIX}-{sandbox.lower()}-account")
        gateway = card(page, f"{PREFIX}-{sandbox.lower()}-gateway")
        for stage in ("git fetch", "git checkout", "go build", "start container"):
            expect(account.locator(f'.stage[data-stage="{stage}"]')).to_have_text(
                f"✓ {stage}", timeout=90_000)
        expect(account.locator(".outcome")).to_have_text("RUNNING", timeout=60_000)
        for stage in ("git fetch", "git checkout", "composer install", "routes",
                      "start container"):
            expect(gateway.locator(f'.stage[data-stage="{stage}"]')).to_have_text(
                f"✓ {stage}", timeout=60_000)
        expect(gateway.locator(".outcome")).to_have_text("RUNNING", timeout=60_000)
        log = page.locator("#log li")
        expect(log.filter(has_text="checked out")).to_have_count(2)
        expect(log.filter(has_text="health check /erangel/healthz answered 200")
               ).to_have_count(1)
        assert once.wait(timeout=120) == 0, (tmp_path / "once.log").read_text()

        # The status summary is refetched when the pass records it: still no reload.
        status = page.locator("#sandbox-live .card").first
        expect(status.locator(".badges")).to_contain_text("InSync", timeout=30_000)
        expect(status.locator(".badges")).to_contain_text("Healthy")
        expect(status.locator(".app-url")).to_contain_text("http://127.0.0.1:")
        assert page.evaluate("window.sdpMarker") == "not reloaded"
        assert len(navigations) == loaded

        stamp = page.locator("#log time").first
        instant = datetime.fromisoformat(str(stamp.get_attribute("datetime")))
        local = instant.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S")
        expect(stamp).to_have_text(local)
        # ICU may name the zone by its older alias (Asia/Calcutta).
        expect(page.locator("#zone")).to_have_text(re.compile(r"Times in Asia/(Kolkata|Calcutta)"))

        shot = tmp_path / "screenshot-sandbox.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("SDP_SAVE_SCREENSHOTS") == "1":
            shutil.copyfile(shot, DOCS / "screenshot-sandbox.png")
        for name, path in (("overview", "/"), ("history", "/history"), ("nodes", "/nodes")):
            page.goto(f"{url}{path}")
            page.screenshot(path=str(tmp_path / f"screenshot-{name}.png"), full_page=True)
        context.close()

        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                    has_touch=True, device_scale_factor=2, timezone_id=ZONE)
        mobile = phone.new_page()
        sign_in(mobile, url, "/")
        for path in ("/", f"/sandboxes/{sandbox}", "/history", "/deployments/2", "/audit",
                     "/templates", "/environments", "/nodes"):
            mobile.goto(f"{url}{path}")
            expect(mobile.locator("h1")).to_be_visible()
            overflow = mobile.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390x844"
        mobile.goto(f"{url}/sandboxes/{sandbox}")
        mobile.screenshot(path=str(tmp_path / "screenshot-sandbox-phone.png"), full_page=True)
        phone.close()
    finally:
        if once is not None and once.poll() is None:
            once.kill()
            once.wait()
        serve.terminate()
        serve.wait(timeout=15)
