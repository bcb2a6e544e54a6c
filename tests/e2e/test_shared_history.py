"""Two hosts, one PostgreSQL history: a CI runner's ``--once`` (its own directory and state
checkout) and a ``watch`` with the page (another directory) write to one store, and the page
streams the CI pass live (by LISTEN/NOTIFY: the page's SQLite poller is not involved)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdp_reconciler.history import History
from sdp_testbed.waiting import wait_for
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.e2e.stack import BIN, Stack, clone_state, sandbox_yaml
from tests.e2e.test_watch import WatchProcess
from tests.support.agents import free_port
from tests.support.pghistory import PgHistory, history_db
from tests.web.live import Sse, parse


@pytest.fixture
def pg() -> Iterator[PgHistory]:
    yield from history_db("e2e")


class Stream:
    """An SSE client reading the page's /events in a thread."""

    def __init__(self, url: str, cookies: dict[str, str]) -> None:
        self.events: list[Sse] = []
        self._client = httpx.Client(base_url=url, cookies=cookies, timeout=httpx.Timeout(
            10, read=None))
        self._response = self._client.send(self._client.build_request("GET", "/events"),
                                           stream=True)
        assert self._response.status_code == 200
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in parse(self._response.iter_lines()):
                self.events.append(event)
        except httpx.HTTPError:
            pass

    def close(self) -> None:
        self._response.close()
        self._client.close()
        self._thread.join(10)


def test_a_ci_runner_and_a_watch_host_share_one_store_and_the_page_shows_the_ci_pass(
        stack: Stack, pg: PgHistory, tmp_path: Path) -> None:
    env = {**stack.env, **pg.env}
    stack.commit_state("templates and environments")
    watch_host = tmp_path / "watch-host"
    watch_host.mkdir()
    watch_state = clone_state(stack, watch_host / "state")
    page = free_port()
    stack.env = env  # WatchProcess passes stack.env and stack.history
    stack.history = pg.url  # type: ignore[assignment]
    watcher = WatchProcess(stack, "--state", str(watch_state), "--interval", "300",
                           "--listen", f"127.0.0.1:{page}")
    stream = None
    try:
        watcher.wait_for_line("pass 1: Plan")
        url = f"http://127.0.0.1:{page}"
        login = httpx.post(f"{url}/login", data={"username": CANARY_USER,
                           "password": CANARY_PASSWORD, "next": "/"}, timeout=60)
        assert login.status_code == 303, login.text
        stream = Stream(url, dict(login.cookies))
        wait_for(lambda: any(e.comment == "connected" for e in stream.events),
                 what="the stream to open")

        # The CI runner: another directory, its own checkout, the same store.
        stack.write("sandboxes/QA-CI.yaml", sandbox_yaml("QA-CI", account_branch="main"))
        stack.commit_state("QA-CI")
        runner = tmp_path / "ci-runner"
        runner.mkdir()
        checkout = clone_state(stack, runner / "state")
        done = subprocess.run([str(BIN / "sdp-reconcile"), "once", "--state", str(checkout),
                               "--history", pg.url], env=env, cwd=runner, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not (runner / ".sdp").exists(), "the CI runner kept a history of its own"

        passes = httpx.get(f"{url}/fragments/overview", cookies=dict(login.cookies),
                           timeout=30)
        assert passes.status_code == 200 and "QA-CI" in passes.text

        def ci_events() -> list[Sse] | None:
            got = [e for e in list(stream.events) if e.event == "progress"
                   and e.json()["sandbox"] == "QA-CI"]
            return got if len(got) >= 3 else None

        got = wait_for(ci_events, timeout=60, what="the CI pass's events on the page's stream")
        history = History(pg.url, env=pg.env)
        try:
            modes = {r["id"]: (r["mode"], r["runner"]) for r in
                     history.query("SELECT id, mode, runner FROM passes")}
        finally:
            history.close()
        assert {modes[e.json()["pass_id"]] for e in got} == {("once", "ci-runner")}
        assert ("watch", "ci-runner") in modes.values()  # the watch host's own pass, same store
        assert any(e.event == "status" for e in stream.events)
    finally:
        if stream is not None:
            stream.close()
        watcher.stop()
