"""History and audit as a user reads them; credentials and secret values nowhere they must not be.

The audit names the author of the last commit that touched the sandbox's state file (flagging
uncommitted edits) and the runner; the git username and password and the environment's secret
values appear in no SQLite row, no output, no state file, no argv and no container label.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import docker

from tests.conftest import CANARY_USER
from tests.e2e.stack import Stack, sandbox_yaml
from tests.node.test_credentials import ArgvSampler, find_canary
from tests.support.names import PREFIX


def rows(stack: Stack, sql: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql).fetchall()]


def test_audit_names_the_state_author_and_the_runner(stack: Stack) -> None:
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    stack.commit_state("QA-MAIN for the login bug", author="Achmad <achmad@example.invalid>")
    assert stack.reconcile("once").code == 0
    audit = rows(stack, "SELECT * FROM audit ORDER BY id")
    account = next(r for r in audit if r["service"] == "account")
    assert account["user"] == "Achmad <achmad@example.invalid>"
    assert account["uncommitted"] == 0
    assert account["runner"] == "ci-runner"
    assert account["repository"] == "account" and account["branch"] == "main"
    assert account["commit_sha"] == stack.heads[("account", "main")]
    assert account["environment"] == "qa" and account["sandbox"] == "QA-MAIN"
    assert account["status"] == "SUCCESS"
    deployments = rows(stack, "SELECT * FROM deployments ORDER BY id")
    assert {d["status"] for d in deployments} == {"RUNNING"}
    stages = [r["stage"] for r in rows(
        stack, "SELECT e.stage FROM events e JOIN deployments d ON d.id = e.deployment_id "
               "WHERE d.service = 'account' AND e.kind = 'event' ORDER BY e.id")]
    assert stages == ["git fetch", "git fetch", "git checkout", "git checkout", "go build",
                      "go build", "start container", "start container"]

    # An edit that is not committed is flagged, and attributed to the last commit's author.
    stack.write("sandboxes/QA-MAIN.yaml",
                sandbox_yaml("QA-MAIN", account_branch="feature/login-error"))
    assert stack.reconcile("once").code == 0
    # (the switch's retire of the previous instance is an audit row of its own, after it)
    latest = rows(stack, "SELECT * FROM audit WHERE service = 'account' AND action NOT LIKE "
                         "'remove%' ORDER BY id DESC")[0]
    assert latest["uncommitted"] == 1
    assert latest["user"] == "Achmad <achmad@example.invalid>"
    assert latest["branch"] == "feature/login-error"


def test_wrong_git_credentials_are_login_failed_before_any_deploy(
    stack: Stack, docker_client: docker.DockerClient, installation: str
) -> None:
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    failed = stack.reconcile("once", env={"SDP_GIT_PASSWORD": "wrong-password"})
    assert failed.code == 1
    assert "LOGIN FAILED" in failed.stderr
    assert "wrong-password" not in failed.output
    assert docker_client.containers.list(
        all=True, filters={"label": f"sdp.instance={installation}"}) == []
    missing = stack.reconcile("once", env={"SDP_GIT_PASSWORD": ""})
    assert missing.code == 1 and "SDP_GIT_USERNAME" in missing.stderr


def test_login_failed_names_the_credentials_file_in_use(stack: Stack, tmp_path: Path) -> None:
    credentials = tmp_path / "git-credentials"
    credentials.write_text(f"username={CANARY_USER}\npassword=wrong-password\n")
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    failed = stack.reconcile("once", env={"SDP_GIT_USERNAME": None, "SDP_GIT_PASSWORD": None,
                                          "SDP_GIT_CREDENTIALS_FILE": str(credentials)})
    assert failed.code == 1 and "LOGIN FAILED" in failed.stderr
    assert f"SDP_GIT_CREDENTIALS_FILE ({credentials})" in failed.stderr
    assert "SDP_GIT_USERNAME" not in failed.stderr and "wrong-password" not in failed.output


def test_credentials_and_secret_values_are_stored_nowhere(
    stack: Stack, docker_client: docker.DockerClient, installation: str
) -> None:
    jwt = stack.env["SDP_SECRET_TEST_JWT"]
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    stack.commit_state("QA-MAIN")
    with ArgvSampler() as sampler:
        first = stack.reconcile("once")
        stack.push_service("account", "main", "account main 2", healthy=False)
        second = stack.reconcile("once")  # a failed deploy: tails and reasons get recorded
    assert first.code == 0 and second.code == 2, second.output
    assert sampler.hits == [] and sampler.samples > 5
    blobs = [first.output.encode(), second.output.encode(), stack.history.read_bytes()]
    for wal in stack.history.parent.glob(stack.history.name + "*"):
        blobs.append(wal.read_bytes())
    for file in stack.state.rglob("*"):
        if file.is_file() and ".git" not in file.parts:
            blobs.append(file.read_bytes())
    # SDP's own secrets: the agents' tokens and the spec-hash key reach nothing at all.
    own = [stack.micro.token.encode(), stack.gateway.token.encode(),
           stack.env["SDP_SPEC_HASH_KEY"].encode()]
    for blob in blobs:
        assert find_canary(blob) == []
        assert jwt.encode() not in blob
        assert [o for o in own if o in blob] == []
    for container in docker_client.containers.list(
            all=True, filters={"label": f"sdp.instance={installation}"}):
        labels = json.dumps(container.labels).encode()
        assert find_canary(labels) == [] and jwt.encode() not in labels
        inspected = json.dumps(container.attrs).encode()
        assert find_canary(inspected) == [] and [o for o in own if o in inspected] == []
    for agent in (stack.micro, stack.gateway):
        operations = agent.client().operations()
        text = json.dumps([o.model_dump(mode="json") for o in operations]).encode()
        assert find_canary(text) == [] and [o for o in own if o in text] == []
        assert [o for o in own if o in agent.log_path.read_bytes()] == []
    # The secret does reach the service's environment, as configured.
    env = docker_client.containers.get(f"{PREFIX}-qa-main-account").attrs["Config"]["Env"]
    assert f"JWT_SECRET={jwt}" in env


def test_a_credentials_file_with_a_non_ascii_password_deploys(
    stack: Stack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """SDP_GIT_CREDENTIALS_FILE, git-credential form, UTF-8: the canary password (with 'é' and
    '€') reaches the git server, which decodes Basic auth as UTF-8 as Bitbucket does."""
    username, password = stack.env.pop("SDP_GIT_USERNAME"), stack.env.pop("SDP_GIT_PASSWORD")
    assert not password.isascii()
    credentials = tmp_path / "git-credentials"
    credentials.write_text(f"username={username}\npassword={password}\n", encoding="utf-8")
    credentials.chmod(0o600)
    stack.env["SDP_GIT_CREDENTIALS_FILE"] = str(credentials)
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    stack.commit_state("QA-MAIN")
    with ArgvSampler() as sampler:
        done = stack.reconcile("once")
    assert done.code == 0, done.output
    assert "LOGIN SUCCESS" in done.output
    account = docker_client.containers.get(f"{PREFIX}-qa-main-account")
    assert account.labels["sdp.commit"] == stack.heads[("account", "main")]
    assert find_canary(done.output.encode()) == [] and sampler.hits == []

    credentials.write_text(f"username={username}\npassword={password[:-1]}\n", encoding="utf-8")
    refused = stack.reconcile("once")
    assert refused.code == 1 and "LOGIN FAILED" in refused.stderr
