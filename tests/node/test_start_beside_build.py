"""A Go service's new container starts while its commit builds (sdp_node/launcher.py): real
agent, real git server, real go, real Docker engine. The launcher itself is tested on the host
in ``test_launcher.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx

from sdp_node.protocol import Credentials
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get, wait_for
from tests.support.agents import AgentProcess, free_port
from tests.support.names import PREFIX
from tests.support.plans import Outcome, deploy, run, spec

STARTED_BESIDE_BUILD = "runs the binary once it is built"


def go_repo(url: str, images: dict[str, str]) -> dict[str, Any]:
    return {"name": "account", "url": url, "kind": "go", "image": images["micro"],
            "health_timeout_seconds": 20}


def launcher_ready(agent: AgentProcess) -> AgentProcess:
    """The agent, once its launcher is built (GET /healthz says so)."""
    wait_for(lambda: httpx.get(f"{agent.url}/healthz").json()["launcher"] == "ready",
             timeout=120, what="the agent's launcher to be built")
    return agent


def account_agent(make_agent: Callable[..., AgentProcess],
                  make_repo: Callable[[str], tuple[Path, str]], images: dict[str, str],
                  first: str) -> tuple[Path, str, AgentProcess]:
    """A repository whose main holds the account service at revision ``first``, its commit,
    and an agent serving it whose launcher is built."""
    path, url = make_repo("account")
    commit = commit_files(path, branch="main", message=first,
                          files=go_service_files(service="account", revision=first))
    return path, commit, launcher_ready(make_agent(repositories=[go_repo(url, images)]))


def deploy_account(agent: AgentProcess, sandbox: str, commit: str, port: int,
                   canary: Credentials) -> Outcome:
    return run(agent.client(), deploy(spec(sandbox=sandbox, service="account",
                                           repository="account", branch="main",
                                           commit=commit, port=port)), canary)


def revision(port: int) -> str:
    got = http_get(f"http://127.0.0.1:{port}/")
    assert got.status == 200, got.text
    return str(got.json()["revision"])


def containers(client: docker.DockerClient, sandbox: str) -> list[str]:
    return sorted(c.name for c in client.containers.list(
        all=True, filters={"label": f"sdp.sandbox={sandbox}"}))


def test_new_containers_start_while_their_commit_builds_and_run_the_built_binary(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    path, first, agent = account_agent(make_agent, make_repo, images, "early-1")
    port = free_port()
    fresh = deploy_account(agent, "e1", first, port, canary)
    assert fresh.ok, fresh.last()
    assert any(STARTED_BESIDE_BUILD in line for line in fresh.logs()), fresh.logs()
    assert any(line.startswith("$ go build") for line in fresh.logs())
    assert fresh.stage_events() == [
        "FETCH_STARTED", "FETCH_COMPLETED", "CHECKOUT_STARTED", "CHECKOUT_COMPLETED",
        "BUILD_STARTED", "BUILD_COMPLETED", "DEPLOY_STARTED", "DEPLOY_COMPLETED",
    ]
    assert revision(port) == "early-1"
    container = docker_client.containers.get(f"{PREFIX}-e1-account")
    assert container.attrs["Config"]["Cmd"] == [
        "/sdp-launch", "/sdp/app-account", "660", "/sdp/app-account"]
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/sdp"]["Source"] == str(agent.workspace / "builds" / "account" / first)
    assert not mounts["/sdp"]["RW"] and not mounts["/sdp-launch"]["RW"]
    # A fresh container has its network alias from the start (nothing else serves the name).
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert "account" in networks[f"{PREFIX}-e1"]["Aliases"]
    # The launcher ran the binary in its own place: the service is the container's process.
    assert container.top()["Processes"][0][-1].startswith("/sdp/app-account")

    # A new commit: its container starts beside the running one and the build at once.
    second = commit_files(path, branch="main", message="2",
                          files=go_service_files(service="account", revision="early-2"))
    spare = free_port()
    switched = deploy_account(agent, "e1", second, spare, canary)
    assert switched.ok, switched.last()
    beside = [line for line in switched.logs() if STARTED_BESIDE_BUILD in line]
    assert beside and f"beside {PREFIX}-e1-account (port {port})" in beside[0], beside
    assert any(line.endswith("joined " f"{PREFIX}-e1 as account") for line in switched.logs())
    assert revision(spare) == "early-2" and revision(port) == "early-1"  # until retired
    assert containers(docker_client, "e1") == [f"{PREFIX}-e1-account",
                                                f"{PREFIX}-e1-account--previous"]

    # An already built commit starts beside the (no-op) build with its binary, no launcher.
    elsewhere = free_port()
    built = deploy_account(agent, "e2", second, elsewhere, canary)
    assert built.ok and any("already built" in line for line in built.logs())
    assert not any(STARTED_BESIDE_BUILD in line for line in built.logs())
    assert docker_client.containers.get(f"{PREFIX}-e2-account").attrs["Config"]["Cmd"] == [
        "/sdp/app-account"]
    assert revision(elsewhere) == "early-2"


def test_a_failed_build_removes_the_container_started_beside_it_and_nothing_else_changes(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    path, good, agent = account_agent(make_agent, make_repo, images, "good-1")
    port = free_port()
    assert deploy_account(agent, "f1", good, port, canary).ok
    serving = docker_client.containers.get(f"{PREFIX}-f1-account").id

    broken = commit_files(path, branch="main", message="broken",
                          files=go_service_files(service="account", revision="bad",
                                                 compile_error=True))
    failed = deploy_account(agent, "f1", broken, free_port(), canary)
    result = failed.last()
    assert not result.ok and result.stage == "go build", result
    assert result.reason == "BuildFailed"
    logs = failed.logs()
    assert any(STARTED_BESIDE_BUILD in line for line in logs), logs
    assert any("started beside the build, was removed" in line for line in logs), logs
    assert containers(docker_client, "f1") == [f"{PREFIX}-f1-account"]
    assert docker_client.containers.get(f"{PREFIX}-f1-account").id == serving
    assert revision(port) == "good-1"

    # A fresh sandbox whose first commit does not build is left with no container at all.
    fresh = deploy_account(agent, "f2", broken, free_port(), canary)
    assert not fresh.ok and fresh.last().reason == "BuildFailed"
    assert containers(docker_client, "f2") == []
