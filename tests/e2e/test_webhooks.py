"""Push webhooks into ``watch``: a real ``git push`` to the test git server, then the signed
Bitbucket payload posted to ``POST /hooks/bitbucket``, with an interval too long to help.

Three nodes: micro-1 and gateway-1 run sandbox QA-A (account@feature/login-error); QA-B runs
account@main pinned to micro-2 (and its gateway on gateway-1). micro-2's agent sits behind a
``RequestCounter``, so the test sees every request a pass sends it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import docker
import httpx

from sdp_node.protocol import LABEL_INSTANCE, LABEL_SANDBOX
from sdp_reconciler.web.bitbucket import SERVER_PUSH, sign
from sdp_testbed.gitserver import GitServer
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import init_bare
from sdp_testbed.waiting import wait_for
from tests.e2e.stack import QA_DEFAULT, QA_ENV, Stack, sandbox_yaml
from tests.e2e.test_watch import WatchProcess, gateway_port, gateway_revision
from tests.support.agents import AgentProcess, free_port
from tests.support.counting_proxy import RequestCounter
from tests.support.gitcli import GitCli
from tests.support.ports import port_block
from tests.support.statedirs import NodeEntry, write_nodes

SECRET = "webhook-canary-" + secrets.token_hex(8)
QA_B = "sandbox: QA-B\nextends: QA-DEFAULT\nservices:\n  account:\n    branch: main\n" \
       "    node: micro-2\n"


def payload(slug: str, url: str, branch: str) -> bytes:
    """What Bitbucket Server sends for a push of ``branch`` to repository ``slug``."""
    return json.dumps({
        "eventKey": SERVER_PUSH, "date": "2026-12-02T01:00:00+0000",
        "actor": {"name": "achmad", "displayName": "Achmad"},
        "repository": {"slug": slug, "name": slug, "project": {"key": "SDP"},
                       "links": {"clone": [{"href": url, "name": "http"}]}},
        "changes": [{"ref": {"id": f"refs/heads/{branch}", "displayId": branch,
                             "type": "BRANCH"}, "refId": f"refs/heads/{branch}",
                     "fromHash": "0" * 40, "toHash": "f" * 40, "type": "UPDATE"}],
    }).encode()


def post(page: int, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"X-Event-Key": SERVER_PUSH, "Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature"] = signature
    return httpx.post(f"http://127.0.0.1:{page}/hooks/bitbucket", content=body,
                      headers=headers, timeout=10)


def rows(history: Path, sql: str) -> list[Any]:
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


def containers_of(client: docker.DockerClient, installation: str,
                  sandbox: str) -> dict[str, tuple[str, str]]:
    """This installation's containers of ``sandbox`` (another test run on the engine may have
    a sandbox of the same name)."""
    return {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in client.containers.list(
        all=True, filters={"label": [f"{LABEL_SANDBOX}={sandbox}",
                                     f"{LABEL_INSTANCE}={installation}"]})}


def test_push_webhooks_deploy_at_once_and_a_scoped_pass_touches_nothing_else(
    stack: Stack, git_server: GitServer, make_agent: Any, images: dict[str, str],
    docker_client: docker.DockerClient, installation: str, tmp_path: Path,
) -> None:
    account_slug = stack.repos["account"].name.removesuffix(".git")
    account_url = git_server.repo_url(account_slug)
    micro2: AgentProcess = make_agent(name="micro-2", repositories=[{
        "name": "account", "url": account_url, "kind": "go", "image": images["micro"],
        "health_timeout_seconds": 20}])
    git = GitCli(tmp_path / "git-home", stack.env["SDP_GIT_USERNAME"],
                 stack.env["SDP_GIT_PASSWORD"])
    with RequestCounter(micro2.port) as counter:
        first, last = port_block(100)
        stack.env.update(write_nodes(
            stack.state, installation=installation, nodes=[
                NodeEntry(stack.micro, "MICRO", port_block(100),
                          token_env="SDP_TEST_MICRO_TOKEN"),
                NodeEntry(stack.gateway, "GATEWAY", port_block(100),
                          token_env="SDP_TEST_GATEWAY_TOKEN")],
            extra_nodes=[{"name": "micro-2", "type": "MICRO", "agent_url": counter.url,
                          "agent_token": {"env": "SDP_TEST_MICRO2_TOKEN"},
                          "address": "host.docker.internal", "public_address": "127.0.0.1",
                          "ports": {"first": first, "last": last}}],
            host={"webhooks": {"repositories": {account_slug: "account"}}}))
        stack.env["SDP_TEST_MICRO2_TOKEN"] = micro2.token
        stack.env["SDP_WEBHOOK_SECRET"] = SECRET

        # The state repository on the git server, pushed with the git CLI.
        state_slug = f"state-{installation}"
        init_bare(git_server.repo_path(state_slug))
        state_url = git_server.repo_url(state_slug)
        state_work = tmp_path / "state-work"
        git.git("init", "-q", "-b", "main", str(state_work))
        git.git("remote", "add", "origin",
                state_url.replace("http://", f"http://{git.username}@"), cwd=state_work)
        git.commit_and_push(state_work, "main", {
            "nodes.yaml": (stack.state / "nodes.yaml").read_bytes(),
            "templates/QA-DEFAULT.yaml": QA_DEFAULT.encode(),
            "environments/qa.yaml": QA_ENV.encode(),
            "sandboxes/QA-A.yaml": sandbox_yaml(
                "QA-A", account_branch="feature/login-error").encode(),
            "sandboxes/QA-B.yaml": QA_B.encode(),
        }, "two sandboxes")
        account_work = git.clone(account_url, tmp_path / "account-work")

        page = free_port()
        watcher = WatchProcess(stack, "--state", str(tmp_path / "checkout"), "--interval",
                               "600", "--remote", state_url, "--listen", f"127.0.0.1:{page}")
        try:
            mark = watcher.wait_for_line("converged", timeout=240)
            port_a = wait_for(lambda: gateway_port(stack, "QA-A"), what="QA-A's gateway")
            port_b = wait_for(lambda: gateway_port(stack, "QA-B"), what="QA-B's gateway")
            assert gateway_revision(port_a) == "account login-error 1"
            assert gateway_revision(port_b) == "account main"
            b_before = containers_of(docker_client, installation, "QA-B")
            assert len(b_before) == 2

            def passes() -> int:
                return int(rows(stack.history, "SELECT COUNT(*) FROM passes")[0][0])

            def live(port: int, revision: str) -> bool | None:
                return gateway_revision(port) == revision or None

            def push_account(branch: str, revision: str) -> bytes:
                git.commit_and_push(account_work, branch, go_service_files(
                    service="account", revision=revision), revision)
                return payload(account_slug, account_url, branch)

            # 1. A push to QA-A's branch: live at once, through a pass scoped to QA-A that
            # sends micro-2 not a single request and leaves QA-B's containers as they were.
            seen_by_micro2 = counter.counts()
            assert seen_by_micro2.get("GET /v1/observe"), "the full pass observed micro-2"
            body = push_account("feature/login-error", "account login-error 2")
            started, count = time.monotonic(), passes()
            answer = post(page, body, sign(SECRET.encode(), body))
            assert answer.status_code == 202 and answer.json()["result"] == "queued", answer.text
            assert "QA-A" in answer.json()["detail"] and "QA-B" not in answer.json()["detail"]
            wait_for(lambda: live(port_a, "account login-error 2"), timeout=120,
                     what="the pushed commit to be live")
            took = time.monotonic() - started
            mark = watcher.wait_for_line("converged", after=mark)
            assert passes() == count + 1
            assert counter.counts() == seen_by_micro2, "\n".join(watcher.lines)
            assert containers_of(docker_client, installation, "QA-B") == b_before
            assert gateway_revision(port_b) == "account main"
            trigger = rows(stack.history, "SELECT trigger FROM passes ORDER BY id DESC")[0][0]
            assert trigger.startswith("webhook: account@feature/login-error (sandboxes QA-A")
            print(f"push-to-live through the webhook: {took:.2f} s")

            # 2. A missing or wrong signature changes nothing: no hook recorded, no pass.
            body = push_account("feature/login-error", "account login-error 3")
            hooks = rows(stack.history, "SELECT COUNT(*) FROM hooks")[0][0]
            count = passes()
            assert post(page, body, None).status_code == 401
            assert post(page, body, sign(b"not the secret", body)).status_code == 401
            assert post(page, body, "sha256=" + "0" * 64).status_code == 401
            assert rows(stack.history, "SELECT COUNT(*) FROM hooks")[0][0] == hooks
            assert passes() == count and watcher.saw("webhook", after=mark) is None
            assert gateway_revision(port_a) == "account login-error 2"
            # The same push, signed, then goes live, in exactly one pass.
            answer = post(page, body, sign(SECRET.encode(), body))
            assert answer.json()["result"] == "queued", answer.text
            wait_for(lambda: live(port_a, "account login-error 3"), timeout=120,
                     what="the third commit")
            mark = watcher.wait_for_line("converged", after=mark)
            assert passes() == count + 1

            # 3. Two pushes in a burst: the last one is the one that ends up live.
            body4 = push_account("feature/login-error", "account login-error 4")
            post(page, body4, sign(SECRET.encode(), body4))
            sent = time.monotonic()
            body5 = push_account("feature/login-error", "account login-error 5")
            time.sleep(max(0.0, sent + 0.1 - time.monotonic()))  # the second hook 100 ms on
            post(page, body5, sign(SECRET.encode(), body5))
            wait_for(lambda: live(port_a, "account login-error 5"), timeout=120,
                     what="the second push of the burst")
            # The pass that took the second hook (coalesced or the next one) has finished.
            second = watcher.wait_for_line("queued", after=watcher.wait_for_line(
                "queued", after=mark))
            mark = watcher.wait_for_line("converged", after=watcher.wait_for_line(
                ": webhook: account", after=second))
            assert gateway_revision(port_a) == "account login-error 5"

            # 4. A branch nobody tracks, a repository SDP does not use: recorded, no pass.
            count = passes()
            body = push_account("feature/nobody", "account nobody")
            answer = post(page, body, sign(SECRET.encode(), body))
            assert answer.status_code == 202 and answer.json() == {
                "result": "ignored", "detail": "no sandbox tracks account@feature/nobody"}
            other = payload("not-sdp", "http://127.0.0.1:1/not-sdp.git", "main")
            answer = post(page, other, sign(SECRET.encode(), other))
            assert answer.status_code == 202 and answer.json()["result"] == "ignored"
            assert passes() == count
            recorded = rows(stack.history, "SELECT repository, branches, result FROM hooks "
                                           "ORDER BY id DESC LIMIT 2")
            assert recorded == [("SDP/not-sdp", "main", "ignored"),
                                (f"SDP/{account_slug}", "feature/nobody", "ignored")]

            # 5. A push to the state repository: fetched and applied, without the interval.
            git.commit_and_push(state_work, "main", {"sandboxes/QA-A.yaml": sandbox_yaml(
                "QA-A", account_branch="main").encode()}, "QA-A back to main")
            body = payload(state_slug, state_url, "main")
            answer = post(page, body, sign(SECRET.encode(), body))
            assert answer.json()["result"] == "queued", answer.text
            watcher.wait_for_line("state: fast-forwarded", after=mark)
            wait_for(lambda: live(port_a, "account main"), timeout=120,
                     what="the state push to be live")
            trigger = rows(stack.history, "SELECT trigger FROM passes ORDER BY id DESC")[0][0]
            assert trigger == f"webhook: state SDP/{state_slug}@main"
            # The secret never reached the history or the output.
            for stored in stack.history.parent.glob(stack.history.name + "*"):  # and -wal
                assert SECRET.encode() not in stored.read_bytes(), stored
            assert not any(SECRET in line for line in watcher.lines)
        except BaseException:
            print("\n".join(watcher.lines))
            raise
        finally:
            watcher.stop()
