"""A reconciler (or an agent) killed at any point is healed by the next pass.

The reconciler writes its events into SQLite as they arrive, so the test watches that file (and
the Docker engine) from outside and SIGKILLs the process at a chosen point. The next
``--once`` must converge: one container per wanted name, none left aside, each port allocated
once, the gateway answering with the right backend.
"""

from __future__ import annotations

import sqlite3

import docker
import pytest
from ruamel.yaml import YAML

from sdp_testbed.waiting import HttpAnswer, http_get, wait_for
from tests.e2e.stack import Stack, sandbox_yaml
from tests.support.names import PREFIX


def seen_event(stack: Stack, event: str, resource: str) -> bool:
    if not stack.history.exists():
        return False
    try:
        with sqlite3.connect(f"file:{stack.history}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT 1 FROM events e JOIN deployments d ON d.id = e.deployment_id "
                "WHERE (e.event = ? OR e.state = ?) AND d.resource = ? LIMIT 1",
                (event, event, resource)).fetchone()
    except sqlite3.OperationalError:  # the reconciler has not created its tables yet
        return False
    return row is not None


def container_exists(client: docker.DockerClient, name: str) -> bool:
    return bool(client.containers.list(all=True, filters={"name": f"^{name}$"}))


def check_converged(stack: Stack, client: docker.DockerClient, installation: str,
                    revision: str) -> None:
    names = sorted(c.name for c in client.containers.list(
        all=True, filters={"label": f"sdp.instance={installation}"}))
    assert names == [f"{PREFIX}-qa-x-account", f"{PREFIX}-qa-x-gateway"]
    allocations = YAML(typ="safe").load((stack.state / "ports.yaml").read_text())["allocations"]
    owners = [(a["sandbox"], a["service"]) for a in allocations]
    ports = [(a["node"], a["port"]) for a in allocations]
    assert sorted(owners) == [("QA-X", "account"), ("QA-X", "gateway")]
    assert len(set(ports)) == len(ports)
    for container in client.containers.list(filters={"label": f"sdp.instance={installation}"}):
        assert container.labels["sdp.port"] in {str(p) for _, p in ports}
    gateway_port = next(a["port"] for a in allocations if a["service"] == "gateway")
    def gateway_answer() -> HttpAnswer | None:
        got = http_get(f"http://127.0.0.1:{gateway_port}/erangel/account/x")
        return got if got.status == 200 else None

    answer = wait_for(gateway_answer, what="the gateway", timeout=30)
    assert answer.json()["body"]["revision"] == revision
    assert stack.reconcile("plan").code == 0


KILL_POINTS = {
    "after fetch": lambda s, c: seen_event(s, "FETCH_COMPLETED", f"{PREFIX}-qa-x-account"),
    "during the build": lambda s, c: seen_event(s, "BUILD_STARTED", f"{PREFIX}-qa-x-account"),
    "after the container is created": lambda s, c: container_exists(c, f"{PREFIX}-qa-x-account"),
    "during the routes write": lambda s, c: seen_event(s, "ROUTES_STARTED",
                                                       f"{PREFIX}-qa-x-gateway"),
    "mid-apply across nodes": lambda s, c: seen_event(s, "RUNNING", f"{PREFIX}-qa-x-account"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_reconciler_is_healed_by_the_next_pass(
    stack: Stack, docker_client: docker.DockerClient, installation: str, point: str
) -> None:
    stack.write("sandboxes/QA-X.yaml", sandbox_yaml("QA-X", account_branch="feature/login-error"))
    stack.commit_state("QA-X")
    # A commit nobody built yet, so the build takes a moment.
    stack.push_service("account", "feature/login-error", f"account {point}")
    process = stack.popen("once")
    try:
        wait_for(lambda: KILL_POINTS[point](stack, docker_client) or None,
                 what=f"the reconciler to reach '{point}'", timeout=120)
    finally:
        process.kill()
        process.wait()
    healed = stack.reconcile("once")
    assert healed.code == 0, healed.output
    check_converged(stack, docker_client, installation, f"account {point}")


SWITCH_POINTS = {
    # The new container beside the old one, not yet confirmed: the agent removes it at start.
    "before the new container is confirmed": f"{PREFIX}-qa-x-account--next",
    # Confirmed and renamed into place, the old one still serving: the routes may not have
    # moved yet; the next pass moves them and retires the old one.
    "after the switch, before the retire": f"{PREFIX}-qa-x-account--previous",
}


@pytest.mark.parametrize("point", list(SWITCH_POINTS))
def test_an_agent_killed_mid_switch_is_healed_with_exactly_one_version_serving(
    stack: Stack, docker_client: docker.DockerClient, installation: str, point: str
) -> None:
    stack.write("sandboxes/QA-X.yaml", sandbox_yaml("QA-X", account_branch="feature/login-error"))
    assert stack.reconcile("once").code == 0
    # A slow start, so the new container stays unconfirmed for a while.
    stack.push_service("account", "feature/login-error", "account replaced",
                       start_delay_ms=3000)
    process = stack.popen("once")
    try:
        wait_for(lambda: container_exists(docker_client, SWITCH_POINTS[point]) or None,
                 what=f"the switch to reach '{point}'", timeout=120)
        stack.micro.kill()
    finally:
        process.kill()
        process.wait()
    stack.micro.start()
    names = {c.name for c in docker_client.containers.list(
        all=True, filters={"label": f"sdp.instance={installation}"})}
    assert f"{PREFIX}-qa-x-account--next" not in names, "an unconfirmed container goes at start"
    assert f"{PREFIX}-qa-x-account" in names, "the serving one never stopped"
    healed = stack.reconcile("once")
    assert healed.code == 0, healed.output
    check_converged(stack, docker_client, installation, "account replaced")


def test_two_reconcilers_never_apply_at_once(
    stack: Stack, docker_client: docker.DockerClient, installation: str
) -> None:
    stack.write("sandboxes/QA-X.yaml", sandbox_yaml("QA-X", account_branch="main"))
    first = stack.popen("once")
    wait_for(lambda: seen_event(stack, "QUEUED", f"{PREFIX}-qa-x-account") or None,
             what="the first reconciler to hold the leases", timeout=60)
    second = stack.reconcile("once", "--lease-wait", "0")
    assert second.code == 1
    assert "cannot take the lease on node" in second.stderr
    assert "nothing was applied" in second.stderr
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    check_converged(stack, docker_client, installation, "account main")
