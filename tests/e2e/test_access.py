"""access.yaml enforced by the pass, end to end: real agents, real engine, real git commits by
different authors, driven through ``sdp-reconcile once`` / ``status`` and the history.

One pass applies the authorised change of one sandbox (rina, QA, moves QA-B's branch) and
leaves the other sandbox exactly as it runs (vic, VIEWER, moved QA-A's branch); the refusal is
in the output, ``status`` and the audit; the authorised deploy's audit row names the
permission, the role and the state commit. Removing access.yaml without ``manage_access``
stops the whole pass.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import docker

from tests.e2e.stack import Stack, sandbox_yaml
from tests.support.names import PREFIX

OPS = ("ops", "ops@company.invalid")
RINA = ("rina", "rina@company.invalid")
VIC = ("vic", "vic@company.invalid")

ACCESS = {"users": {
    "ops": {"email": OPS[1], "roles": ["ADMIN"]},
    "rina": {"email": RINA[1], "roles": ["QA"]},
    "vic": {"email": VIC[1], "roles": ["VIEWER"]},
}}


def commit(state: Path, who: tuple[str, str], message: str, *paths: str) -> str:
    """Commit only ``paths`` (additions, edits, deletions) as ``who``."""
    name, email = who
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
           "GIT_COMMITTER_EMAIL": email, "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin", "HOME": str(state)}
    subprocess.run(["git", "-C", str(state), "add", "-A", "--", *paths], check=True, env=env)
    subprocess.run(["git", "-C", str(state), "commit", "-q", "-m", message], check=True,
                   env=env)
    return subprocess.run(["git", "-C", str(state), "rev-parse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


def running_commits(client: docker.DockerClient, installation: str) -> dict[str, str]:
    return {c.name: c.labels.get("sdp.commit", "") for c in client.containers.list(
        filters={"label": f"sdp.instance={installation}"})}


def audit_rows(history: Path) -> list[dict[str, object]]:
    with sqlite3.connect(history) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]


def test_an_unauthorised_sandbox_change_is_left_as_it_runs_while_an_authorised_one_applies(
    stack: Stack, docker_client: docker.DockerClient, installation: str,
) -> None:
    main = stack.heads[("account", "main")]
    login = stack.heads[("account", "feature/login-error")]
    stack.write("access.yaml", json.dumps(ACCESS, indent=1) + "\n")
    stack.write("sandboxes/QA-A.yaml", sandbox_yaml("QA-A", account_branch="main"))
    stack.write("sandboxes/QA-B.yaml", sandbox_yaml("QA-B", account_branch="main"))
    commit(stack.state, OPS, "ops introduces access.yaml and two sandboxes", ".")
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    commits = running_commits(docker_client, installation)
    assert commits[f"{PREFIX}-qa-a-account"] == commits[f"{PREFIX}-qa-b-account"] == main

    stack.write("sandboxes/QA-A.yaml", sandbox_yaml("QA-A", account_branch="feature/login-error"))
    vic_commit = commit(stack.state, VIC, "vic moves QA-A", "sandboxes/QA-A.yaml")
    stack.write("sandboxes/QA-B.yaml", sandbox_yaml("QA-B", account_branch="feature/login-error"))
    rina_commit = commit(stack.state, RINA, "rina moves QA-B", "sandboxes/QA-B.yaml")

    second = stack.reconcile("once")
    refusal = (f"commit {vic_commit[:7]} by {VIC[1]} (VIEWER): sandboxes/QA-A.yaml: deploy is "
               "not granted to VIEWER")
    assert second.code == 2, second.output
    assert refusal in second.stdout  # the "not converged:" lines of --once
    assert refusal in second.stderr  # the plan, as printed before it is applied
    commits = running_commits(docker_client, installation)
    assert commits[f"{PREFIX}-qa-a-account"] == main, "QA-A must stay as it runs"
    assert commits[f"{PREFIX}-qa-b-account"] == login, "QA-B's authorised change applies"

    status = stack.reconcile("status", "--history", str(stack.history))
    assert "Unauthorised" in status.stdout and refusal in status.stdout, status.output

    rows = audit_rows(stack.history)
    refused = [r for r in rows if r["action"] == "refused"]
    assert [(r["sandbox"], r["note"], r["state_commit"], r["permission"]) for r in refused] == [
        ("QA-A", refusal, vic_commit, "deploy")]
    deployed = [r for r in rows if r["sandbox"] == "QA-B" and r["service"] == "account"
                and r["commit_sha"] == login]
    assert [(r["permission"], r["role"], r["state_commit"]) for r in deployed] == [
        ("deploy", "QA", rina_commit)]

    # The refusal stays in effect and is judged again, but audited once.
    third = stack.reconcile("once")
    assert third.code == 2 and refusal in third.stdout, third.output
    assert len([r for r in audit_rows(stack.history) if r["action"] == "refused"]) == 1
    assert running_commits(docker_client, installation)[f"{PREFIX}-qa-a-account"] == main

    # rina may not remove access.yaml (manage_access): nothing at all is applied, not even
    # her own change to QA-B in the same commit.
    stack.delete("access.yaml")
    stack.write("sandboxes/QA-B.yaml", sandbox_yaml("QA-B", account_branch="main"))
    commit(stack.state, RINA, "rina drops access.yaml", "access.yaml", "sandboxes/QA-B.yaml")
    halted = stack.reconcile("once")
    assert halted.code == 2, halted.output
    assert "nothing is applied: " in halted.stdout and "manage_access" in halted.stdout
    commits = running_commits(docker_client, installation)
    assert commits[f"{PREFIX}-qa-b-account"] == login
    assert commits[f"{PREFIX}-qa-a-account"] == main


def test_uncommitted_edits_are_never_applied_while_access_yaml_is_in_force(
    stack: Stack, docker_client: docker.DockerClient, installation: str,
) -> None:
    stack.write("access.yaml", json.dumps(ACCESS, indent=1) + "\n")
    stack.write("sandboxes/QA-A.yaml", sandbox_yaml("QA-A", account_branch="main"))
    commit(stack.state, OPS, "ops introduces access.yaml", ".")
    assert stack.reconcile("once").code == 0

    stack.write("sandboxes/QA-A.yaml", sandbox_yaml("QA-A", account_branch="feature/login-error"))
    edited = stack.reconcile("once")
    assert edited.code == 2, edited.output
    assert "uncommitted" in edited.stdout and "sandboxes/QA-A.yaml" in edited.stdout
    assert running_commits(docker_client, installation)[f"{PREFIX}-qa-a-account"] == \
        stack.heads[("account", "main")]
