"""The seed's MVP end to end, driven only through the CLI and HTTP, as a user would.

Real agents, real Docker engine, real git server, real go and PHP. Two sandboxes at once:
QA-LOGIN-ERROR (from QA-DEFAULT, account on feature/login-error, payment and user on OCP) and
QA-MAIN (account on main).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import docker
from ruamel.yaml import YAML

from sdp_testbed.waiting import http_get, wait_for
from tests.e2e.stack import Stack, clone_state, sandbox_yaml
from tests.support.names import PREFIX


def gateway_urls(output: str) -> dict[str, str]:
    return dict(re.findall(r"^(\S+): point the app at (\S+)$", output, re.M))


def through(url: str, service: str) -> dict[str, Any]:
    answer = http_get(f"{url}/erangel/{service}/ping")
    assert answer.status == 200, answer.text
    return dict(answer.json())


def containers(client: docker.DockerClient, installation: str) -> dict[str, str]:
    return {c.name: c.id for c in client.containers.list(
        all=True, filters={"label": f"sdp.instance={installation}"})}


def allocations(stack: Stack) -> list[dict[str, Any]]:
    path = stack.state / "ports.yaml"
    if not path.exists():
        return []
    return list(YAML(typ="safe").load(path.read_text())["allocations"])


def test_the_seed_mvp_end_to_end(
    stack: Stack, docker_client: docker.DockerClient, installation: str, tmp_path: Path,
    images: dict[str, str],
) -> None:
    stack.write("sandboxes/QA-LOGIN-ERROR.yaml",
                sandbox_yaml("QA-LOGIN-ERROR", account_branch="feature/login-error"))
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    stack.commit_state("two sandboxes")

    first = stack.reconcile("once")
    assert first.code == 0, first.output
    assert "LOGIN SUCCESS" in first.stderr
    urls = gateway_urls(first.stdout)
    assert set(urls) == {"QA-LOGIN-ERROR", "QA-MAIN"}
    assert through(urls["QA-LOGIN-ERROR"], "account")["body"]["revision"] == \
        "account login-error 1"
    assert through(urls["QA-MAIN"], "account")["body"]["revision"] == "account main"
    for url in urls.values():
        for service in ("payment", "user"):
            assert through(url, service)["body"] == {
                "backend": "ocp", "service": f"ocp-{service}", "path": "/ping"}

    # Right after --once, plan has nothing to do.
    idle = stack.reconcile("plan")
    assert idle.code == 0, idle.output
    assert "No changes" in idle.stdout
    running = containers(docker_client, installation)

    # A new commit on the branch is live after the next pass.
    old = stack.heads[("account", "feature/login-error")]
    new = stack.push_service("account", "feature/login-error", "account login-error 2")
    pending = stack.reconcile("plan")
    assert pending.code == 2
    assert f"branch moved {old[:7]}→{new[:7]}" in pending.stdout
    assert stack.reconcile("once").code == 0
    assert through(urls["QA-LOGIN-ERROR"], "account")["body"]["revision"] == \
        "account login-error 2"
    assert through(urls["QA-MAIN"], "account")["body"]["revision"] == "account main"

    # A container removed by hand comes back; one SDP does not own is left alone.
    docker_client.containers.get(f"{PREFIX}-qa-main-account").remove(force=True)
    foreign = docker_client.containers.run(
        images["micro"], ["sleep", "600"], name=f"not-sdp-{installation}", detach=True,
        labels={"sdp.test.foreign": installation})
    try:
        healed = stack.reconcile("once")
        assert healed.code == 0, healed.output
        assert "drift: container missing" in healed.stderr
        assert through(urls["QA-MAIN"], "account")["body"]["revision"] == "account main"
        foreign.reload()
        assert foreign.status == "running"
    finally:
        foreign.remove(force=True)

    # A fresh clone of the state repository with a new history file recreates nothing.
    before = containers(docker_client, installation)
    clone = clone_state(stack, tmp_path / "ci-clone")
    assert not (clone / "ports.yaml").exists()  # never committed: recovered from labels
    fresh = stack.reconcile("once", state=clone, history=tmp_path / "fresh.sqlite")
    assert fresh.code == 0, fresh.output
    assert "No changes" in fresh.stderr
    assert containers(docker_client, installation) == before
    assert {(a["sandbox"], a["service"], a["port"]) for a in allocations(stack)} == {
        (a["sandbox"], a["service"], a["port"])
        for a in YAML(typ="safe").load((clone / "ports.yaml").read_text())["allocations"]}

    # Deleting a sandbox file removes its containers, network and ports.
    stack.delete("sandboxes/QA-MAIN.yaml")
    stack.commit_state("QA-MAIN is done")
    removed = stack.reconcile("once")
    assert removed.code == 0, removed.output
    names = containers(docker_client, installation)
    assert not any("qa-main" in name for name in names)
    assert f"{PREFIX}-qa-login-error-account" in names
    assert not docker_client.networks.list(names=[f"{PREFIX}-qa-main"])
    assert {a["sandbox"] for a in allocations(stack)} == {"QA-LOGIN-ERROR"}
    assert running.keys() >= names.keys()

    # An empty state directory is refused and removes nothing.
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = stack.reconcile("once", state=empty)
    assert refused.code == 1
    assert "missing nodes.yaml" in refused.stderr
    assert containers(docker_client, installation) == names


def test_a_sandbox_state_with_only_nodes_yaml_is_refused_without_allow_prune(
    stack: Stack, docker_client: docker.DockerClient, installation: str
) -> None:
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    stack.commit_state("one sandbox")
    assert stack.reconcile("once").code == 0
    before = containers(docker_client, installation)
    stack.delete("sandboxes/QA-MAIN.yaml")
    refused = stack.reconcile("once")
    assert refused.code == 1
    assert "--allow-prune" in refused.stderr and "would remove 2 of the 2" in refused.stderr
    assert containers(docker_client, installation) == before
    allowed = stack.reconcile("once", "--allow-prune")
    assert allowed.code == 0, allowed.output
    assert containers(docker_client, installation) == {}


def test_suspend_resume_and_restart(
    stack: Stack, docker_client: docker.DockerClient, installation: str
) -> None:
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    assert stack.reconcile("once").code == 0
    ports_before = allocations(stack)

    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml(
        "QA-MAIN", account_branch="main", extra="lifecycle:\n  suspended: true\n"))
    suspended = stack.reconcile("once")
    assert suspended.code == 0, suspended.output
    assert "sandbox suspended" in suspended.stderr
    assert gateway_urls(suspended.stdout) == {}, "no URL to point an app at while suspended"
    states = {c.name: c.status for c in docker_client.containers.list(
        all=True, filters={"label": f"sdp.instance={installation}"})}
    assert states == {f"{PREFIX}-qa-main-account": "exited", f"{PREFIX}-qa-main-gateway": "exited"}
    assert allocations(stack) == ports_before

    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    resumed = stack.reconcile("once")
    assert resumed.code == 0, resumed.output
    assert "sandbox resumed" in resumed.stderr
    url = gateway_urls(resumed.stdout)["QA-MAIN"]
    assert wait_for(lambda: through(url, "account"), what="the resumed sandbox")["body"][
        "revision"] == "account main"

    old = docker_client.containers.get(f"{PREFIX}-qa-main-account").id
    restarted = stack.reconcile("restart", "QA-MAIN", "account")
    assert restarted.code == 0, restarted.output
    assert "restart requested" in restarted.stderr
    assert docker_client.containers.get(f"{PREFIX}-qa-main-account").id != old
    history = stack.reconcile("plan")
    assert history.code == 0
    unknown = stack.reconcile("restart", "NOPE")
    assert unknown.code == 1 and "no sandbox 'NOPE'" in unknown.stderr


def days_ago(days: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S+0000")


def test_an_idle_sandbox_expires_then_retires_and_comes_back_when_touched(
    stack: Stack, docker_client: docker.DockerClient, installation: str, tmp_path: Path
) -> None:
    stack.write("sandboxes/QA-OLD.yaml", sandbox_yaml("QA-OLD", account_branch="main"))
    stack.commit_state("QA-OLD")
    assert stack.reconcile("once").code == 0
    # Its file last changed 20 days ago; a fresh history knows no later deploy.
    stack.write("sandboxes/QA-OLD.yaml", sandbox_yaml(
        "QA-OLD", account_branch="main", extra="lifecycle:\n  expire_after: 14d\n"))
    stack.commit_state("expire after two weeks", date=days_ago(20))
    expired = stack.reconcile("once", history=tmp_path / "h2.sqlite")
    assert expired.code == 0, expired.output
    assert "sandbox expired: no activity for 14d" in expired.stderr
    states = {c.name: c.status for c in docker_client.containers.list(
        all=True, filters={"label": f"sdp.instance={installation}"})}
    assert set(states.values()) == {"exited"} and len(states) == 2

    stack.write("sandboxes/QA-OLD.yaml", sandbox_yaml(
        "QA-OLD", account_branch="main",
        extra="lifecycle:\n  expire_after: 14d\n  retention: 3d\n"))
    stack.commit_state("and keep it three days", date=days_ago(20))
    retired = stack.reconcile("once", "--allow-prune", history=tmp_path / "h3.sqlite")
    assert retired.code == 0, retired.output
    assert "retention of 3d is over" in retired.stderr
    assert containers(docker_client, installation) == {}
    assert allocations(stack) == []

    stack.commit_state("still needed")  # a new commit touching nothing is not activity...
    stack.write("sandboxes/QA-OLD.yaml", sandbox_yaml("QA-OLD", account_branch="main"))
    stack.commit_state("QA-OLD is needed again")  # ...a change to its file is
    back = stack.reconcile("once", history=tmp_path / "h4.sqlite")
    assert back.code == 0, back.output
    assert len(containers(docker_client, installation)) == 2


def test_plan_json_and_agent_checks_reported_at_their_line(stack: Stack) -> None:
    import json

    stack.write("sandboxes/QA-J.yaml", sandbox_yaml("QA-J", account_branch="main"))
    planned = stack.reconcile("plan", "--json")
    assert planned.code == 2, planned.output
    document = json.loads(planned.stdout)
    assert document["summary"] == "Plan: 3 to create, 0 to change, 0 to remove."
    assert {(c["symbol"], c["subject"], c["resource"]) for c in document["changes"]} == {
        ("+", "network", f"{PREFIX}-qa-j"), ("+", "service", f"{PREFIX}-qa-j-account"),
        ("+", "gateway", f"{PREFIX}-qa-j-gateway")}
    assert all(c["location"].startswith(str(stack.state)) for c in document["changes"])

    # A service no MICRO node serves, and a branch the repository lacks: plan names the line.
    stack.write("sandboxes/QA-J.yaml", "sandbox: QA-J\nextends: QA-DEFAULT\nservices:\n"
                "  acount:\n    branch: main\n  account:\n    branch: feature/nope\n")
    problems = stack.reconcile("plan")
    assert problems.code == 1
    assert f"{stack.state}/sandboxes/QA-J.yaml:5:5: services.acount: no MICRO node serves a " \
           "go repository named 'acount' (served: account, payment, user)" in problems.stdout
    assert f"{stack.state}/sandboxes/QA-J.yaml:7:5: services.account.branch: branch " \
           "'feature/nope' does not exist in repository account" in problems.stdout


def test_status_and_logs_commands(stack: Stack) -> None:
    stack.write("sandboxes/QA-S.yaml", sandbox_yaml("QA-S", account_branch="main"))
    assert stack.reconcile("once").code == 0
    status = stack.reconcile("status", "--history", str(stack.history))
    assert status.code == 0, status.output
    assert "QA-S: InSync Healthy (UpToDate)" in status.stdout
    assert "last pass:" in status.stdout and "by ci-runner (once): CONVERGED" in status.stdout
    logs = stack.reconcile("logs", "QA-S", "account")
    assert logs.code == 0, logs.output
    assert "account main listening on :8080" in logs.stdout
    gateway = stack.reconcile("logs", "QA-S", "gateway", "--tail", "5")
    assert gateway.code == 0
    missing = stack.reconcile("logs", "QA-S", "ledger")
    assert missing.code == 1 and f"no node runs {PREFIX}-qa-s-ledger" in missing.stderr
    unknown = stack.reconcile("status", "NOPE", "--history", str(stack.history))
    assert unknown.code == 1 and "no status recorded for sandbox 'NOPE'" in unknown.stderr


def test_a_service_missing_from_a_new_gateway_commit_is_reported_at_its_line(
    stack: Stack, docker_client: docker.DockerClient, installation: str
) -> None:
    from sdp_testbed.erangel import gateway_files
    from sdp_testbed.repos import commit_files

    commit_files(stack.repos["erangel"], branch="slim", base="develop", message="no user_url",
                 files=gateway_files(revision="slim", ocp_urls={
                     "account": stack.ocp["account"].url_for_containers,
                     "payment": stack.ocp["payment"].url_for_containers}))
    stack.write("sandboxes/QA-SLIM.yaml", "sandbox: QA-SLIM\nextends: QA-DEFAULT\n"
                "gateway:\n  branch: slim\nservices:\n  user:\n    branch: main\n")
    planned = stack.reconcile("plan")
    assert planned.code == 1, planned.output
    assert f"{stack.state}/sandboxes/QA-SLIM.yaml:7:5: services.user: the gateway's erangel " \
           "at" in planned.stdout
    assert "has no 'user_url' in its config" in planned.stdout
    once = stack.reconcile("once")
    assert once.code == 2
    assert containers(docker_client, installation) == {}  # the sandbox was left alone
