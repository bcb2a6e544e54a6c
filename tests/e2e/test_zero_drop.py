"""Deploys that never drop a request, through a real Apache gateway under load.

A load loop sends a GET every 25 ms to ``<gateway port>/erangel/account/x`` in a thread; the
gateway forwards it to the sandbox's account service, whose answer names its revision (a
constant compiled into the commit). Across a good commit, a compile error, a binary that exits
at once, a ``/healthz`` that answers 500 and a slow start, not one request may fail and no
answer may come from a broken revision. A failure is remembered (the next pass does not try the
same commit again) and tried again once the branch moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from ruamel.yaml import YAML

from sdp_node.protocol import Credentials
from sdp_testbed.erangel import gateway_files
from sdp_testbed.load import LoadLoop
from sdp_testbed.repos import commit_files
from tests.e2e.stack import Stack, build_stack, sandbox_yaml, stop_stack
from tests.support.agents import AgentProcess
from tests.support.names import PREFIX

pytestmark = pytest.mark.apache

ACCOUNT = f"{PREFIX}-qa-z-account"
BRANCH = "feature/zero-drop"


@pytest.fixture
def apache_stack(
    tmp_path: Path, installation: str, make_agent: Callable[..., AgentProcess],
    make_repo: Callable[[str], tuple[Path, str]], images: dict[str, str], canary: Credentials,
    apache_image: str,
) -> Iterator[Stack]:
    # Every commit that never turns healthy is waited for this long (twice per run of this
    # file); the slow start (4 s) and Apache's first start fit in it with room to spare.
    built = build_stack(tmp_path, installation, make_agent, make_repo, images, canary,
                        apache_image=apache_image, health_timeout=15)
    try:
        yield built
    finally:
        stop_stack(built)


def allocations(stack: Stack) -> dict[str, int]:
    loaded = YAML(typ="safe").load((stack.state / "ports.yaml").read_text())
    return {a["service"]: a["port"] for a in loaded["allocations"] if a["sandbox"] == "QA-Z"}


def account_containers(client: docker.DockerClient, installation: str) -> dict[str, str]:
    """Name -> commit of this installation's account containers (running or not)."""
    return {c.name: c.labels["sdp.commit"] for c in client.containers.list(
        all=True, filters={"label": [f"sdp.instance={installation}", "sdp.service=account"]})}


def test_no_request_fails_and_no_broken_revision_answers_across_good_and_bad_commits(
    apache_stack: Stack, docker_client: docker.DockerClient, installation: str,
) -> None:
    stack = apache_stack
    stack.push_service("account", BRANCH, "good-1")
    stack.write("sandboxes/QA-Z.yaml", sandbox_yaml("QA-Z", account_branch=BRANCH))
    stack.commit_state("QA-Z")
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    gateway_port = allocations(stack)["gateway"]
    broken = {"compile-error", "exits-at-once", "health-500"}

    with LoadLoop(f"http://127.0.0.1:{gateway_port}/erangel/account/x") as load:
        load.wait_for_answers(10)
        assert load.revisions() == {"good-1": load.mark()}, load.failures()[:3]

        # A good commit: switched through the routes to a spare port.
        port_before = allocations(stack)["account"]
        good_2 = stack.push_service("account", BRANCH, "good-2")
        good = stack.reconcile("once")
        assert good.code == 0, good.output
        assert "switched to port" in good.output, good.output
        mark = load.mark()
        load.wait_for_answers(5)
        assert set(load.revisions(mark)) == {"good-2"}
        assert allocations(stack)["account"] != port_before, "ports.yaml follows the switch"
        assert list(account_containers(docker_client, installation)) == [ACCOUNT], \
            "the previous instance was retired"

        # A compile error: nothing changes.
        sha = stack.push_service("account", BRANCH, "compile-error", compile_error=True)
        failed = stack.reconcile("once")
        assert failed.code != 0
        assert "BuildFailed" in failed.output, failed.output

        # A binary that exits at once: CrashedOnStart, with its last line.
        stack.push_service("account", BRANCH, "exits-at-once", exit_at_once=True)
        crashed = stack.reconcile("once")
        assert crashed.code != 0
        status = stack.reconcile("status", "QA-Z", "--history", str(stack.history))
        assert "CrashedOnStart" in status.stdout, status.output
        assert "cannot start (exits at once, on purpose)" in status.stdout, status.output

        # /healthz answering 500: HealthCheckFailed with the answer.
        sha = stack.push_service("account", BRANCH, "health-500", healthy=False)
        unhealthy = stack.reconcile("once")
        assert unhealthy.code != 0
        status = stack.reconcile("status", "QA-Z", "--history", str(stack.history))
        assert "HealthCheckFailed" in status.stdout and "HTTP 500" in status.stdout, \
            status.output

        # Remembered: the next pass does not try it again (no deploy, nothing built).
        again = stack.reconcile("once")
        assert f"service {ACCOUNT} on micro-1" not in again.stdout, again.output
        status = stack.reconcile("status", "QA-Z", "--history", str(stack.history))
        assert "HealthCheckFailed" in status.stdout and sha[:7] in status.stdout, status.output
        assert account_containers(docker_client, installation) == {ACCOUNT: good_2}

        # The branch moves: tried again; a slow start within the timeout is waited for.
        stack.push_service("account", BRANCH, "slow-start", start_delay_ms=4000)
        slow = stack.reconcile("once")
        assert slow.code == 0, slow.output
        mark = load.mark()
        load.wait_for_answers(5)
        assert set(load.revisions(mark)) == {"slow-start"}
        status = stack.reconcile("status", "QA-Z", "--history", str(stack.history))
        assert "QA-Z: InSync Healthy" in status.stdout, status.output

    failures = load.failures()
    assert failures == [], f"{len(failures)} of {len(load.answers)} failed: {failures[:5]}"
    seen = load.revisions()
    assert not broken & set(seen), seen
    assert {"good-1", "good-2", "slow-start"} <= set(seen), seen
    assert list(account_containers(docker_client, installation)) == [ACCOUNT]


def test_services_calling_each_other_by_docker_dns_keep_reaching_a_healthy_instance(
    apache_stack: Stack, docker_client: docker.DockerClient, installation: str,
) -> None:
    """payment calls account as ``http://account:8080/`` (the sandbox network's alias) on
    every request; account is switched to a good commit and then to one whose /healthz fails:
    the new container joins the alias only once healthy, so no call fails or reaches it."""
    stack = apache_stack
    stack.push_service("account", BRANCH, "dns-1")
    stack.write("sandboxes/QA-Z.yaml", sandbox_yaml(
        "QA-Z", account_branch=BRANCH, extra="  payment:\n    branch: main\n"))
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    gateway_port = allocations(stack)["gateway"]
    with LoadLoop(f"http://127.0.0.1:{gateway_port}/erangel/payment/peer/account") as load:
        load.wait_for_answers(10)
        assert set(load.revisions()) == {"dns-1"}, load.failures()[:3]
        stack.push_service("account", BRANCH, "dns-2")
        assert stack.reconcile("once").code == 0
        mark = load.mark()
        load.wait_for_answers(10)
        assert set(load.revisions(mark)) == {"dns-2"}
        stack.push_service("account", BRANCH, "dns-unhealthy", healthy=False)
        assert stack.reconcile("once").code != 0
        mark = load.mark()
        load.wait_for_answers(10)
        assert set(load.revisions(mark)) == {"dns-2"}
    failures = load.failures()
    assert failures == [], f"{len(failures)} of {len(load.answers)} failed: {failures[:5]}"
    assert "dns-unhealthy" not in load.revisions()
    assert list(account_containers(docker_client, installation)) == [ACCOUNT]


def push_gateway(stack: Stack, revision: str, *, syntax_error: bool = False,
                 unhealthy: bool = False, refuse_root: bool = False) -> str:
    files = gateway_files(revision=revision, ocp_urls={
        name: stand_in.url_for_containers for name, stand_in in stack.ocp.items()})
    if syntax_error:
        files["index.php"] += b"\nthis is not PHP (\n"
    if refuse_root:  # answers 500 when its code runs as root
        marker = b"$path = parse_url("
        files["index.php"] = files["index.php"].replace(
            marker, b"if (posix_geteuid() === 0) { answer(500, ['error' => 'runs as root']); "
            b"return; }\n" + marker, 1)
    if unhealthy:  # parses, but every answer (its health path's too) is a 500
        marker = b"$path = parse_url("
        assert marker in files["index.php"]
        files["index.php"] = files["index.php"].replace(marker, b"answer(500, ['status' => "
                                                        b"'sick', 'gateway_revision' => "
                                                        b"GATEWAY_REVISION]);\nreturn;\n"
                                                        + marker, 1)
    return commit_files(stack.repos["erangel"], branch="develop", message=revision, files=files)


def test_a_gateway_commit_switches_inside_the_running_container_and_a_broken_one_never_serves(
    apache_stack: Stack, docker_client: docker.DockerClient, installation: str,
) -> None:
    stack = apache_stack
    stack.push_service("account", BRANCH, "behind-the-gateway")
    stack.write("sandboxes/QA-Z.yaml", sandbox_yaml("QA-Z", account_branch=BRANCH))
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    gateway_port = allocations(stack)["gateway"]
    gateway = docker_client.containers.get(f"{PREFIX}-qa-z-gateway")
    with LoadLoop(f"http://127.0.0.1:{gateway_port}/erangel/account/x") as load:
        load.wait_for_answers(10)
        assert set(load.gateway_revisions()) == {"erangel develop"}, load.failures()[:3]

        # A good commit that would refuse to answer as root: staged (and served) as Apache's
        # user, it switches.
        push_gateway(stack, "erangel develop 2", refuse_root=True)
        good = stack.reconcile("once")
        assert good.code == 0, good.output
        mark = load.mark()
        load.wait_for_answers(10)
        assert set(load.gateway_revisions(mark)) == {"erangel develop 2"}

        broken = push_gateway(stack, "erangel broken", syntax_error=True)
        failed = stack.reconcile("once")
        assert failed.code != 0
        status = stack.reconcile("status", "QA-Z", "--history", str(stack.history))
        assert "BuildFailed" in status.stdout and "php -l" in status.stdout, status.output
        assert broken[:7] in status.stdout, status.output
        mark = load.mark()
        load.wait_for_answers(10)
        assert set(load.gateway_revisions(mark)) == {"erangel develop 2"}

        # Parses, but answers 500: staged inside the running container, never served.
        sick = push_gateway(stack, "erangel sick", unhealthy=True)
        refused = stack.reconcile("once")
        assert refused.code != 0
        status = stack.reconcile("status", "QA-Z", "--history", str(stack.history))
        assert "HealthCheckFailed" in status.stdout and "HTTP 500" in status.stdout, \
            status.output
        assert sick[:7] in status.stdout, status.output
        mark = load.mark()
        load.wait_for_answers(10)
        assert set(load.gateway_revisions(mark)) == {"erangel develop 2"}

    failures = load.failures()
    assert failures == [], f"{len(failures)} of {len(load.answers)} failed: {failures[:5]}"
    assert "erangel broken" not in load.gateway_revisions()
    assert [a for a in load.answers if a.gateway_revision == "erangel sick"] == []
    after = docker_client.containers.get(f"{PREFIX}-qa-z-gateway")
    assert after.id == gateway.id, "the gateway container was never replaced"
