"""``sdp-reconcile watch``: state changes, a remote state repository, an invalid commit."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import docker

from sdp_testbed.gitserver import GitServer
from sdp_testbed.repos import commit_files, init_bare
from sdp_testbed.waiting import http_get, wait_for
from tests.e2e.stack import BIN, QA_DEFAULT, QA_ENV, Stack, sandbox_yaml
from tests.support.agents import free_port
from tests.support.names import PREFIX


class WatchProcess:
    def __init__(self, stack: Stack, *args: str) -> None:
        self.lines: list[str] = []
        listen = [] if "--listen" in args else ["--listen", "off"]
        self.process = subprocess.Popen(
            [str(BIN / "sdp-reconcile"), "watch", *listen, "--history",
             str(stack.history), *args], env=stack.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, cwd=stack.root,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str, *, after: int = 0) -> int | None:
        for index, line in enumerate(self.lines[after:], start=after):
            if text in line:
                return index + 1
        return None

    def wait_for_line(self, text: str, *, after: int = 0, timeout: float = 120) -> int:
        return wait_for(lambda: self.saw(text, after=after), timeout=timeout,
                        what=f"watch to print {text!r}; it printed: {self.lines[-20:]}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self._reader.join(timeout=5)


def gateway_revision(port: int) -> str | None:
    answer = http_get(f"http://127.0.0.1:{port}/erangel/account/x")
    return answer.json()["body"]["revision"] if answer.status == 200 else None


def gateway_port(stack: Stack, sandbox: str) -> int | None:
    if not stack.history.exists():
        return None
    with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
        row = db.execute("SELECT port FROM status WHERE sandbox = ? AND service = 'gateway'",
                         (sandbox,)).fetchone()
    return int(row[0]) if row and row[0] else None


def test_watch_reconciles_on_state_changes_and_ignores_its_own_writes(stack: Stack) -> None:
    page = free_port()
    watcher = WatchProcess(stack, "--state", str(stack.state), "--interval", "300",
                           "--listen", f"127.0.0.1:{page}")
    try:
        mark = watcher.wait_for_line("pass 1: Plan")
        assert watcher.saw(f"status page on http://127.0.0.1:{page}/")
        health = http_get(f"http://127.0.0.1:{page}/healthz")
        assert health.status == 200
        assert http_get(f"http://127.0.0.1:{page}/").status == 401  # a session is needed
        stack.write("sandboxes/QA-W.yaml", sandbox_yaml("QA-W", account_branch="main"))
        mark = watcher.wait_for_line("converged", after=mark)
        # Each change applied has its own line: symbol, what, reason, outcome.
        assert watcher.saw(f"+ service {PREFIX}-qa-w-account on micro-1 (account@main")
        assert watcher.saw("new sandbox (done)")
        port = wait_for(lambda: gateway_port(stack, "QA-W"), what="the gateway port")
        assert gateway_revision(port) == "account main"

        stack.write("sandboxes/QA-W.yaml",
                    sandbox_yaml("QA-W", account_branch="feature/login-error"))
        watcher.wait_for_line("converged", after=mark)
        assert gateway_revision(port) == "account login-error 1"
        # Its own ports.yaml writes never triggered a pass.
        assert not any("ports.yaml" in line for line in watcher.lines)
    finally:
        watcher.stop()


def test_watch_follows_a_remote_state_repository_and_survives_an_invalid_commit(
    stack: Stack, git_server: GitServer, docker_client: docker.DockerClient,
    installation: str, tmp_path: Path,
) -> None:
    remote_path = git_server.repo_path(f"state-{installation}")
    init_bare(remote_path)
    base = {
        "nodes.yaml": (stack.state / "nodes.yaml").read_bytes(),
        "templates/QA-DEFAULT.yaml": QA_DEFAULT.encode(),
        "environments/qa.yaml": QA_ENV.encode(),
        "sandboxes/QA-R.yaml": sandbox_yaml("QA-R", account_branch="main").encode(),
    }
    commit_files(remote_path, branch="main", files=base, message="first")
    checkout = tmp_path / "checkout"
    watcher = WatchProcess(stack, "--state", str(checkout), "--interval", "1",
                           "--remote", git_server.repo_url(f"state-{installation}"))
    try:
        mark = watcher.wait_for_line("converged")
        port = wait_for(lambda: gateway_port(stack, "QA-R"), what="the gateway port")
        assert gateway_revision(port) == "account main"

        # A push reaches the watcher.
        commit_files(remote_path, branch="main", message="to the feature branch", files={
            "sandboxes/QA-R.yaml": sandbox_yaml(
                "QA-R", account_branch="feature/login-error").encode()})
        mark = watcher.wait_for_line("state: fast-forwarded", after=mark)
        wait_for(lambda: gateway_revision(port) == "account login-error 1" or None,
                 what="the pushed change to be live")

        # An invalid commit applies nothing from it; drift keeps being healed meanwhile.
        commit_files(remote_path, branch="main", message="broken", files={
            "sandboxes/QA-R.yaml": b"sandbox: QA-R\nextends: QA-DEFAULT\nservices: [\n"})
        mark = watcher.wait_for_line("state is invalid", after=mark)
        watcher.wait_for_line("sandboxes/QA-R.yaml:4:1", after=mark - 1)
        docker_client.containers.get(f"{PREFIX}-qa-r-account").remove(force=True)
        watcher.wait_for_line("converging to the last valid state", after=mark)
        wait_for(lambda: gateway_revision(port) == "account login-error 1" or None,
                 what="the removed container to come back from the last valid state")
        with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
            invalid = db.execute("SELECT summary FROM passes WHERE status = 'INVALID_STATE'"
                                 " ORDER BY id DESC").fetchone()
        assert invalid is not None and "QA-R.yaml" in invalid[0]
    finally:
        watcher.stop()
