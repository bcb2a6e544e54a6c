"""The sandbox gateway: its PHP container and route table, on the real engine with real PHP.

Topology (one machine): a MICRO agent runs the sandbox's account service; a GATEWAY agent runs
the erangel gateway from the PHP image built from the host's php-cli; OCP is stood in for by
small HTTP servers on this host. Gateway containers reach both through host.docker.internal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from sdp_node.protocol import Credentials, SetRoutes
from sdp_testbed.erangel import CONFIG_PATH, gateway_files
from sdp_testbed.go_service import go_service_files
from sdp_testbed.ocp import OcpStandIn
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get
from tests.support.agents import AgentProcess, free_port
from tests.support.names import NAMES
from tests.support.plans import deploy, deploy_gateway, run, spec

SERVICES = ("account", "payment", "user")


@dataclass
class Topology:
    micro: AgentProcess
    gateway: AgentProcess
    gateway_repo: Path
    ocp: dict[str, OcpStandIn]
    account_commit: str
    gateway_commit: str
    credentials: Credentials

    def ocp_urls(self) -> dict[str, str]:
        return {name: stand_in.url_for_containers for name, stand_in in self.ocp.items()}

    def deploy_account(self, sandbox: str) -> int:
        port = free_port()
        outcome = run(self.micro.client(), deploy(spec(
            sandbox=sandbox, service="account", repository="account", branch="main",
            commit=self.account_commit, port=port)), self.credentials)
        assert outcome.ok, outcome.last()
        return port

    def deploy_gateway(self, sandbox: str, routes: dict[str, str], *,
                       commit: str | None = None, port: int | None = None) -> Any:
        port = port or free_port()
        outcome = run(self.gateway.client(), deploy_gateway(spec(
            sandbox=sandbox, service="gateway", repository="erangel", branch="develop",
            commit=commit or self.gateway_commit, port=port), routes), self.credentials)
        outcome.port = port  # type: ignore[attr-defined]
        return outcome


def via_gateway(port: int, service: str) -> dict[str, Any]:
    answer = http_get(f"http://127.0.0.1:{port}/erangel/{service}/ping")
    assert answer.status == 200, answer.text
    return dict(answer.json())


def php_gateway_repository(url: str, images: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "erangel", "url": url, "kind": "php", "image": images["php-cli"],
        "command": ["php", "-S", "0.0.0.0:80", "/etc/sdp/router.php"], "init": True,
        "health_path": "/erangel/healthz", "mount_target": "/var/www/html/erangel-ocean",
        "health_timeout_seconds": 20, **extra,
    }


@pytest.fixture
def topology(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials,
) -> Iterator[Topology]:
    stand_ins = {name: OcpStandIn(f"ocp-{name}") for name in SERVICES}
    for stand_in in stand_ins.values():
        stand_in.start()
    try:
        account_path, account_url = make_repo("account")
        account_commit = commit_files(
            account_path, branch="main", message="1",
            files=go_service_files(service="account", revision="sandbox-account-1"))
        gateway_path, gateway_url = make_repo("erangel")
        gateway_commit = commit_files(
            gateway_path, branch="develop", message="1",
            files=gateway_files(revision="gw-1", ocp_urls={
                n: s.url_for_containers for n, s in stand_ins.items()}))
        micro = make_agent(name="micro-1", repositories=[
            {"name": "account", "url": account_url, "kind": "go", "image": images["micro"]}])
        gateway = make_agent(name="gateway-1", node_type="GATEWAY", reload_command=[],
                             repositories=[php_gateway_repository(gateway_url, images)])
        yield Topology(micro, gateway, gateway_path, stand_ins, account_commit,
                       gateway_commit, canary)
    finally:
        for stand_in in stand_ins.values():
            stand_in.stop()


def test_account_routed_to_the_sandbox_and_the_rest_to_ocp(topology: Topology) -> None:
    account_port = topology.deploy_account("QA-LOGIN-ERROR")
    outcome = topology.deploy_gateway(
        "QA-LOGIN-ERROR", {"account": f"http://host.docker.internal:{account_port}"})
    assert outcome.ok, outcome.last()
    assert outcome.stage_events() == [
        "FETCH_STARTED", "FETCH_COMPLETED", "CHECKOUT_STARTED", "CHECKOUT_COMPLETED",
        "BUILD_STARTED", "BUILD_COMPLETED", "ROUTES_STARTED", "ROUTES_COMPLETED",
        "DEPLOY_STARTED", "DEPLOY_COMPLETED",
    ]
    stages = [e.stage for e in outcome.events if e.kind == "event"]
    assert "composer install" in stages and "routes" in stages
    port = outcome.port
    account = via_gateway(port, "account")
    assert account["body"]["revision"] == "sandbox-account-1"
    assert account["body"]["env"]["SDP_SANDBOX"] == "QA-LOGIN-ERROR"
    for service in ("payment", "user"):
        answer = via_gateway(port, service)
        assert answer["body"] == {"backend": "ocp", "service": f"ocp-{service}", "path": "/ping"}
    assert via_gateway(port, "account")["gateway_revision"] == "gw-1"
    observed = {g.container: g for g in topology.gateway.client().observe().gateways}
    gateway = observed[NAMES.container("QA-LOGIN-ERROR", "gateway")]
    assert gateway.committed_routes == topology.ocp_urls()
    assert gateway.live_routes == {
        **topology.ocp_urls(), "account": f"http://host.docker.internal:{account_port}"}


def test_two_sandboxes_on_one_gateway_branch_with_their_own_routes(topology: Topology) -> None:
    account_port = topology.deploy_account("s1")
    first = topology.deploy_gateway(
        "s1", {"account": f"http://host.docker.internal:{account_port}"})
    second = topology.deploy_gateway("s2", {})
    assert first.ok and second.ok
    assert via_gateway(first.port, "account")["body"]["revision"] == "sandbox-account-1"
    assert via_gateway(second.port, "account")["body"]["backend"] == "ocp"


def test_a_route_only_change_keeps_the_container(
    topology: Topology, docker_client: docker.DockerClient
) -> None:
    account_port = topology.deploy_account("s1")
    outcome = topology.deploy_gateway("s1", {})
    assert via_gateway(outcome.port, "account")["body"]["backend"] == "ocp"
    name = NAMES.container("s1", "gateway")
    before = docker_client.containers.get(name).id
    change = run(topology.gateway.client(), [SetRoutes(
        step_id="r", sandbox="s1", container=name,
        routes={"account": f"http://host.docker.internal:{account_port}"})], None)
    assert change.ok and change.last().changed
    assert change.stage_events() == ["ROUTES_STARTED", "ROUTES_COMPLETED"]
    assert via_gateway(outcome.port, "account")["body"]["revision"] == "sandbox-account-1"
    assert docker_client.containers.get(name).id == before
    same = run(topology.gateway.client(), [SetRoutes(
        step_id="r", sandbox="s1", container=name,
        routes={"account": f"http://host.docker.internal:{account_port}"})], None)
    assert same.ok and not same.last().changed


@pytest.mark.parametrize("value", [
    "x'; system('id'); //", "http://a/'.system('id').'", "http://a/\nb", "http://a/?>",
    "http://a\\b", "http://a/${x}", "http://a/{$x}", 'http://a/"b', "http://a b",
    "http://user:pw@host", "ftp://x", "http://a?b=c",
])
def test_injection_attempts_are_refused_and_change_nothing(
    topology: Topology, value: str
) -> None:
    outcome = topology.deploy_gateway("s1", {})
    tree = topology.gateway.workspace / "gateways" / "s1" / topology.gateway_commit
    config = tree / CONFIG_PATH
    before = config.read_bytes()
    change = run(topology.gateway.client(), [SetRoutes(
        step_id="r", sandbox="s1", container=NAMES.container("s1", "gateway"),
        routes={"account": value})], None)
    result = change.last()
    assert not result.ok and result.stage == "routes"
    assert config.read_bytes() == before
    assert via_gateway(outcome.port, "payment")["body"]["backend"] == "ocp"
    assert via_gateway(outcome.port, "account")["body"]["backend"] == "ocp"


def test_a_config_symlinked_out_of_the_tree_is_refused(
    topology: Topology, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.php"
    outside.write_text("<?php $config['account_url'] = 'http://outside.invalid';\n")
    commit = commit_files(topology.gateway_repo, branch="develop", message="symlink",
                          files={CONFIG_PATH: str(outside).encode()},
                          symlinks=frozenset({CONFIG_PATH}))
    outcome = topology.deploy_gateway("s1", {"account": "http://host.docker.internal:1"},
                                      commit=commit)
    result = outcome.last()
    assert not result.ok and result.stage == "routes"
    assert "symlink" in result.message or "outside" in result.message
    assert outside.read_text() == "<?php $config['account_url'] = 'http://outside.invalid';\n"


def test_routes_edited_by_hand_are_reported_by_observe(topology: Topology) -> None:
    topology.deploy_gateway("s1", {})
    tree = topology.gateway.workspace / "gateways" / "s1" / topology.gateway_commit
    config = tree / CONFIG_PATH
    config.write_text(config.read_text().replace(
        topology.ocp["payment"].url_for_containers, "http://hand-edited.invalid"))
    observed = {g.container: g for g in topology.gateway.client().observe().gateways}
    gateway = observed[NAMES.container("s1", "gateway")]
    assert gateway.live_routes["payment"] == "http://hand-edited.invalid"
    assert gateway.committed_routes["payment"] == topology.ocp["payment"].url_for_containers


def test_composer_runs_when_present_and_is_skipped_otherwise(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials,
) -> None:
    path, url = make_repo("erangel")
    with_json = commit_files(path, branch="develop", message="composer",
                             files=gateway_files(revision="c", ocp_urls={},
                                                 with_composer=True))
    without = commit_files(path, branch="plain", base="develop", message="plain",
                           files={"composer.json": None})
    agent = make_agent(name="gateway-1", node_type="GATEWAY", reload_command=[], repositories=[
        php_gateway_repository(url, images),
    ])
    ran = run(agent.client(), deploy_gateway(spec(
        sandbox="c1", service="gateway", repository="erangel", branch="develop",
        commit=with_json, port=free_port()), {}), canary)
    assert ran.ok, ran.last()
    assert any("composer install --no-dev" in line for line in ran.logs())
    assert (agent.workspace / "gateways" / "c1" / with_json / "vendor" / "autoload.php").is_file()
    skipped = run(agent.client(), deploy_gateway(spec(
        sandbox="c2", service="gateway", repository="erangel", branch="plain",
        commit=without, port=free_port()), {}), canary)
    assert skipped.ok
    assert any("no composer.json" in line for line in skipped.logs())

    missing = make_agent(name="gateway-2", node_type="GATEWAY", reload_command=[], repositories=[
        php_gateway_repository(url, images, composer="composer-not-installed"),
    ])
    absent = run(missing.client(), deploy_gateway(spec(
        sandbox="c3", service="gateway", repository="erangel", branch="develop",
        commit=with_json, port=free_port()), {}), canary)
    assert absent.ok
    assert any("composer-not-installed is not installed" in line for line in absent.logs())


@pytest.mark.parametrize(("key", "why"), [
    ("base", "ignored_route_keys"), ("nosuch", "assigns no plain $config['nosuch_url']"),
    ("account_url_timeout", "assigns no plain"),
])
def test_set_routes_refuses_keys_that_are_not_route_keys(
    topology: Topology, key: str, why: str
) -> None:
    outcome = topology.deploy_gateway("s1", {})
    config = topology.gateway.workspace / "gateways" / "s1" / topology.gateway_commit / CONFIG_PATH
    before = config.read_bytes()
    change = run(topology.gateway.client(), [SetRoutes(
        step_id="r", sandbox="s1", container=NAMES.container("s1", "gateway"),
        routes={"account": "http://host.docker.internal:1", key: "http://evil.invalid"})], None)
    result = change.last()
    assert not result.ok and not result.changed
    assert f"route key {key!r} is not a route of gateway erangel" in result.message
    assert why in result.message
    assert config.read_bytes() == before  # not even the valid key was written
    assert via_gateway(outcome.port, "account")["body"]["backend"] == "ocp"


def test_a_gateway_deploy_with_a_key_that_is_not_a_route_changes_nothing(
    topology: Topology, docker_client: docker.DockerClient
) -> None:
    for key in ("base", "nosuch"):
        outcome = topology.deploy_gateway("s1", {key: "http://evil.invalid"})
        result = outcome.last()
        assert not result.ok
        assert f"route key {key!r} is not a route of gateway erangel" in result.message
    assert docker_client.containers.list(
        all=True, filters={"name": NAMES.container("s1", "gateway")}) == []


def test_a_custom_routes_file_is_read_fresh_after_set_routes_under_php_s(
    topology: Topology, make_agent: Callable[..., AgentProcess],
    make_repo: Callable[[str], tuple[Path, str]], images: dict[str, str],
) -> None:
    """php -S has no graceful reload, and its opcache (on in the image) rechecks a file only
    every ``revalidate_freq`` seconds: the router invalidates the config it knows, and also
    the repository's own ``routes_file`` (it once knew only ``application/config/*/config.php``,
    so a custom file kept routing to the old target for up to two seconds)."""
    routes_file = "application/config/sdp/routes.php"
    files = gateway_files(revision="gw-custom", ocp_urls=topology.ocp_urls())
    files[routes_file] = files.pop(CONFIG_PATH)
    files["index.php"] = files["index.php"].replace(
        b"'/application/config/' . ENVIRONMENT . '/config.php'", f"'/{routes_file}'".encode())
    assert f"'/{routes_file}'".encode() in files["index.php"]
    path, url = make_repo("erangel-custom")
    commit = commit_files(path, branch="develop", message="custom routes file", files=files)
    gateway = make_agent(name="gateway-2", node_type="GATEWAY", reload_command=[],
                         repositories=[php_gateway_repository(url, images,
                                                              routes_file=routes_file)])
    account_port = topology.deploy_account("s-custom")
    port = free_port()
    outcome = run(gateway.client(), deploy_gateway(spec(
        sandbox="s-custom", service="gateway", repository="erangel", branch="develop",
        commit=commit, port=port), {}), topology.credentials)
    assert outcome.ok, outcome.last()
    # opcache caches no file younger than file_update_protection (2 s): as old as a file
    # of a gateway that has run for a while, so the next request caches it.
    (served,) = (gateway.workspace / "gateways").glob(f"*/{commit}/{routes_file}")
    past = served.stat().st_mtime - 60
    os.utime(served, (past, past))
    assert via_gateway(port, "account")["body"]["backend"] == "ocp"  # now in opcache
    name = NAMES.container("s-custom", "gateway")
    change = run(gateway.client(), [SetRoutes(
        step_id="r", sandbox="s-custom", container=name,
        routes={"account": f"http://host.docker.internal:{account_port}"})], None)
    assert change.ok and change.last().changed
    body = via_gateway(port, "account")["body"]
    assert body.get("revision") == "sandbox-account-1", f"still the old route: {body}"
