"""Containers are confined by default, as node.yaml's ``hardening`` says (docs/node.md).

Asserted with ``docker inspect`` of containers a real agent created: pids limit,
``no-new-privileges``, capabilities dropped to the repository's list, read-only trees, and
the node's default CPU and memory limits when the plan sets none; each setting can be changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from sdp_node.protocol import Credentials, SetRoutes
from sdp_testbed.erangel import gateway_files
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get
from tests.node.test_gateway import php_gateway_repository
from tests.support.agents import AgentProcess, free_port
from tests.support.names import NAMES
from tests.support.plans import deploy, deploy_gateway, run, spec


def _host_config(client: docker.DockerClient, sandbox: str, service: str) -> dict[str, Any]:
    return dict(client.containers.get(NAMES.container(sandbox, service)).attrs["HostConfig"])


def _mounts(client: docker.DockerClient, sandbox: str, service: str) -> dict[str, bool]:
    container = client.containers.get(NAMES.container(sandbox, service))
    return {m["Destination"]: m["RW"] for m in container.attrs["Mounts"]}


def _upstream(port: int) -> str:
    """Where the gateway sent /erangel/account/ping (the upstream is unreachable: 502)."""
    return str(http_get(f"http://127.0.0.1:{port}/erangel/account/ping").json()["upstream"])


def test_services_are_confined_by_default_and_as_configured(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    path, url = make_repo("account")
    commit = commit_files(path, branch="main", message="1",
                          files=go_service_files(service="account", revision="1"))
    repository = {"name": "account", "url": url, "kind": "go", "image": images["micro"]}
    default = make_agent(name="micro-1", repositories=[repository])
    assert run(default.client(), deploy(spec(
        sandbox="d1", service="account", repository="account", branch="main", commit=commit,
        port=free_port())), canary).ok
    host = _host_config(docker_client, "d1", "account")
    assert host["PidsLimit"] == 512
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == 512 * 1024 * 1024
    mounts = _mounts(docker_client, "d1", "account")
    mounts.pop("/sdp-launch", None)  # SDP's launcher, if it started while the commit built
    assert mounts == {"/src": False, "/sdp": False}

    tuned = make_agent(name="micro-2", repositories=[{**repository, "capabilities": [
        "net_bind_service"]}], hardening={
        "pids_limit": 64, "cpu_millicores": 250, "memory_bytes": 96 * 1024 * 1024})
    assert run(tuned.client(), deploy(spec(
        sandbox="d2", service="account", repository="account", branch="main", commit=commit,
        port=free_port())), canary).ok
    host = _host_config(docker_client, "d2", "account")
    assert host["PidsLimit"] == 64 and host["CapAdd"] == ["NET_BIND_SERVICE"]
    assert host["NanoCpus"] == 250_000_000 and host["Memory"] == 96 * 1024 * 1024

    loose = make_agent(name="micro-3", repositories=[repository], hardening={
        "pids_limit": None, "no_new_privileges": False, "drop_capabilities": False,
        "cpu_millicores": None, "memory_bytes": None})
    assert run(loose.client(), deploy(spec(
        sandbox="d3", service="account", repository="account", branch="main", commit=commit,
        port=free_port(), cpu_millicores=300)), canary).ok
    host = _host_config(docker_client, "d3", "account")
    assert not host["PidsLimit"] and not host["SecurityOpt"] and not host["CapDrop"]
    assert host["NanoCpus"] == 300_000_000 and not host["Memory"]  # the plan's own limit wins


def test_a_gateway_tree_is_read_only_and_routes_still_change_in_place(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    path, url = make_repo("erangel")
    commit = commit_files(path, branch="develop", message="1", files=gateway_files(
        revision="ro", ocp_urls={"account": "http://ocp-account.invalid"}))
    agent = make_agent(name="gateway-1", node_type="GATEWAY", reload_command=[],
                       repositories=[php_gateway_repository(url, images)])
    port = free_port()
    assert run(agent.client(), deploy_gateway(spec(
        sandbox="g1", service="gateway", repository="erangel", branch="develop",
        commit=commit, port=port), {}), canary).ok
    host = _host_config(docker_client, "g1", "gateway")
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["KILL", "SETGID", "SETUID"]
    assert host["PidsLimit"] == 512 and host["SecurityOpt"] == ["no-new-privileges"]
    assert _mounts(docker_client, "g1", "gateway")["/var/www/html/erangel-ocean"] is False
    container = docker_client.containers.get(NAMES.container("g1", "gateway"))
    code, _ = container.exec_run(["sh", "-c", "echo x > /var/www/html/erangel-ocean/x"])
    assert code != 0  # the container cannot write its tree

    assert _upstream(port) == "http://ocp-account.invalid/ping"
    change = run(agent.client(), [SetRoutes(
        step_id="r", sandbox="g1", container=NAMES.container("g1", "gateway"),
        routes={"account": "http://moved.invalid"})], None)
    assert change.ok and change.last().changed
    assert _upstream(port) == "http://moved.invalid/ping"
