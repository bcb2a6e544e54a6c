"""Go service deploys through a real agent: real git server, real go, real Docker engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from sdp_node.protocol import Credentials, DeployService
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get, wait_for
from tests.support.agents import AgentProcess, free_port
from tests.support.names import PREFIX
from tests.support.plans import deploy, run, spec


def go_repo(url: str, images: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": "account", "url": url, "kind": "go", "image": images["micro"],
            "health_timeout_seconds": 20, **extra}


def answer(port: int) -> dict[str, Any]:
    got = http_get(f"http://127.0.0.1:{port}/")
    assert got.status == 200, got.text
    return dict(got.json())


@pytest.fixture
def account(make_repo: Callable[[str], tuple[Path, str]]) -> tuple[Path, str, dict[str, str]]:
    path, url = make_repo("account")
    heads = {
        "main": commit_files(path, branch="main",
                             files=go_service_files(service="account", revision="main-1"),
                             message="main 1"),
    }
    heads["feature/login-error"] = commit_files(
        path, branch="feature/login-error", base="main",
        files=go_service_files(service="account", revision="login-error-1"), message="feature",
    )
    return path, url, heads


def test_two_sandboxes_run_two_branches_of_one_repository_at_once(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]], docker_client: docker.DockerClient,
) -> None:
    _path, url, heads = account
    client = make_agent(repositories=[go_repo(url, images)]).client()
    port_a, port_b = free_port(), free_port()
    first = run(client, deploy(spec(sandbox="QA-LOGIN-ERROR", service="account",
                                    repository="account", branch="feature/login-error",
                                    commit=heads["feature/login-error"], port=port_a)), canary)
    second = run(client, deploy(spec(sandbox="achmad", service="account", repository="account",
                                     branch="main", commit=heads["main"], port=port_b)), canary)
    assert first.ok and second.ok, (first.results, second.results)
    assert answer(port_a)["revision"] == "login-error-1"
    assert answer(port_b)["revision"] == "main-1"
    assert answer(port_a)["env"]["SDP_SANDBOX"] == "QA-LOGIN-ERROR"
    # The seed's stage and event names, in order.
    assert first.stage_events() == [
        "FETCH_STARTED", "FETCH_COMPLETED", "CHECKOUT_STARTED", "CHECKOUT_COMPLETED",
        "BUILD_STARTED", "BUILD_COMPLETED", "DEPLOY_STARTED", "DEPLOY_COMPLETED",
    ]
    container = docker_client.containers.get(f"{PREFIX}-qa-login-error-account")
    labels = container.labels
    assert labels["sdp.commit"] == heads["feature/login-error"]
    assert labels["sdp.port"] == str(port_a) and labels["sdp.sandbox"] == "QA-LOGIN-ERROR"
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [f"{PREFIX}-qa-login-error"]
    assert "account" in networks[f"{PREFIX}-qa-login-error"]["Aliases"]
    host_config = container.attrs["HostConfig"]
    assert "host.docker.internal:host-gateway" in host_config["ExtraHosts"]
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped"


def test_new_commit_redeploys_and_same_commit_elsewhere_builds_nothing(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]],
) -> None:
    path, url, heads = account
    agent = make_agent(repositories=[go_repo(url, images)])
    client = agent.client()
    port = free_port()
    assert run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                   branch="main", commit=heads["main"], port=port)), canary).ok
    assert answer(port)["revision"] == "main-1"

    new = commit_files(path, branch="main",
                       files=go_service_files(service="account", revision="main-2"), message="2")
    redeploy = run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                       branch="main", commit=new, port=port)), canary)
    assert redeploy.ok, redeploy.results
    assert answer(port)["revision"] == "main-2"
    binary = agent.workspace / "builds" / "account" / new / "app-account"
    built_at = binary.stat().st_mtime_ns

    other_port = free_port()
    again = run(client, deploy(spec(sandbox="s2", service="account", repository="account",
                                    branch="main", commit=new, port=other_port)), canary)
    assert again.ok
    assert answer(other_port)["revision"] == "main-2"
    assert any("already built for this commit" in line for line in again.logs())
    assert any("already in the node's store" in line for line in again.logs())
    assert binary.stat().st_mtime_ns == built_at

    # The same plan once more changes nothing at all.
    idle = run(client, deploy(spec(sandbox="s2", service="account", repository="account",
                                   branch="main", commit=new, port=other_port)), canary)
    assert idle.ok and not any(r.changed for r in idle.results)


def test_failed_build_leaves_the_old_container_answering(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]], docker_client: docker.DockerClient,
) -> None:
    path, url, heads = account
    client = make_agent(repositories=[go_repo(url, images)]).client()
    port = free_port()
    assert run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                   branch="main", commit=heads["main"], port=port)), canary).ok
    before = docker_client.containers.get(f"{PREFIX}-s1-account").id
    broken = commit_files(path, branch="main", message="broken",
                          files=go_service_files(service="account", revision="main-2",
                                                 compile_error=True))
    outcome = run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                      branch="main", commit=broken, port=port)), canary)
    result = outcome.last()
    assert not result.ok and result.state == "FAILED"
    assert result.stage == "go build"
    assert "go build of account failed" in result.message
    assert any("main.go" in line for line in result.output_tail)
    assert "DEPLOY_FAILED" in outcome.stage_events()
    assert answer(port)["revision"] == "main-1"
    assert docker_client.containers.get(f"{PREFIX}-s1-account").id == before


def test_unhealthy_new_container_brings_the_old_one_back(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]], docker_client: docker.DockerClient,
    installation: str,
) -> None:
    path, url, heads = account
    client = make_agent(repositories=[go_repo(url, images, health_timeout_seconds=3)]).client()
    port = free_port()
    assert run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                   branch="main", commit=heads["main"], port=port)), canary).ok
    sick = commit_files(path, branch="main", message="sick",
                        files=go_service_files(service="account", revision="main-2",
                                               healthy=False))
    outcome = run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                      branch="main", commit=sick, port=port)), canary)
    result = outcome.last()
    assert not result.ok and result.stage == "start container"
    assert "did not answer /healthz" in result.message
    assert any("main-2 listening" in line for line in result.output_tail)
    assert wait_for(lambda: answer(port), what="the previous container answering")[
        "revision"] == "main-1"
    names = [c.name for c in docker_client.containers.list(
        all=True, filters={"label": ["sdp.sandbox=s1", f"sdp.instance={installation}"]})]
    assert names == [f"{PREFIX}-s1-account"]


def test_missing_image_is_a_clear_error_and_nothing_is_pulled(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]], docker_client: docker.DockerClient,
) -> None:
    _path, url, heads = account
    missing = "sdp-testbed/never-loaded:1.0"
    client = make_agent(repositories=[go_repo(url, images, image=missing)]).client()
    outcome = run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                      branch="main", commit=heads["main"], port=free_port())),
                  canary)
    result = outcome.last()
    assert not result.ok and result.stage == "start container"
    assert missing in result.message and "micro-1" in result.message
    assert "docker load -i" in result.message
    assert not docker_client.images.list(name="sdp-testbed/never-loaded")


def test_foreign_containers_are_never_touched(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]], docker_client: docker.DockerClient,
    installation: str,
) -> None:
    _path, url, heads = account
    client = make_agent(repositories=[go_repo(url, images)]).client()
    unlabelled = docker_client.containers.create(
        images["micro"], ["sleep", "300"], name=f"{PREFIX}-s1-account",
        labels={"sdp.test.foreign": installation},
    )
    other_node = docker_client.containers.create(
        images["micro"], ["sleep", "300"], name=f"{PREFIX}-s2-account",
        labels={"sdp.managed": "true", "sdp.instance": installation, "sdp.node": "micro-9",
                "sdp.test.foreign": installation},
    )
    try:
        for sandbox in ("s1", "s2"):
            outcome = run(client, deploy(spec(sandbox=sandbox, service="account",
                                              repository="account", branch="main",
                                              commit=heads["main"], port=free_port())), canary)
            result = outcome.last()
            assert not result.ok
            assert "SDP never touches it" in result.message
        assert "no SDP labels" in run(client, deploy(spec(
            sandbox="s1", service="account", repository="account", branch="main",
            commit=heads["main"], port=free_port())), canary).last().message
        observed = client.observe()
        assert [c.name for c in observed.containers] == []
        for container in (unlabelled, other_node):
            container.reload()
            assert container.status == "created"
    finally:
        unlabelled.remove(force=True)
        other_node.remove(force=True)


def test_a_plan_cannot_name_a_container_outside_the_scheme(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]],
) -> None:
    _path, url, heads = account
    client = make_agent(repositories=[go_repo(url, images)]).client()
    bad = spec(sandbox="s1", service="account", repository="account", branch="main",
               commit=heads["main"], port=free_port()).model_copy(update={"container": "db"})
    outcome = run(client, [DeployService(step_id="x", spec=bad, network=f"{PREFIX}-s1")], canary)
    assert not outcome.ok
    assert "is not SDP's name" in outcome.last().message


def test_environment_files_limits_and_host_git_config_ignored(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]], docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    from sdp_node.protocol import EnvFileMount, Secret

    _path, url, heads = account
    # A hostile host git config: any URL rewrite or credential helper it names is ignored.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        f'[url "http://127.0.0.1:9/nowhere/"]\n\tinsteadOf = {url.rsplit("/", 1)[0]}/\n'
        "[credential]\n\thelper = store\n")
    agent = make_agent(repositories=[go_repo(url, images)], start=False)
    agent.start_env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    client = agent.start()
    port = free_port()
    wanted = spec(sandbox="s1", service="account", repository="account", branch="main",
                  commit=heads["main"], port=port, cpu_millicores=500,
                  memory_bytes=64 * 1024 * 1024,
                  files=[EnvFileMount(path="/etc/sdp/flags.json", content=Secret('{"x": 1}'))])
    outcome = run(client, deploy(wanted), canary)
    assert outcome.ok, outcome.last()
    container = docker_client.containers.get(f"{PREFIX}-s1-account")
    code, output = container.exec_run(["cat", "/etc/sdp/flags.json"])
    assert code == 0 and output == b'{"x": 1}'
    code, _ = container.exec_run(["sh", "-c", "echo x > /etc/sdp/flags.json"])
    assert code != 0  # mounted read-only
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 1024 * 1024
    assert not (home / ".git-credentials").exists()


def test_observe_reports_each_running_container_health_endpoint(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    account: tuple[Path, str, dict[str, str]],
) -> None:
    path, url, _heads = account
    sick = commit_files(path, branch="main", message="sick", files=go_service_files(
        service="account", revision="sick", healthy=False))
    # Deployed while the node checked "/", which the service answers...
    lenient = make_agent(name="micro-1", repositories=[go_repo(url, images, health_path="/")])
    assert run(lenient.client(), deploy(spec(sandbox="s1", service="account",
                                             repository="account", branch="main",
                                             commit=sick, port=free_port())), canary).ok
    assert [c.health_check for c in lenient.client().observe().containers] == ["ok"]
    # ...then observed by the same node configured with the real health path.
    strict = make_agent(name="micro-1", repositories=[go_repo(url, images)])
    (container,) = strict.client().observe().containers
    assert container.health_check == "HTTP 500"
