"""The gateway on a real Apache + mod_php image laid out like php:8.3-apache.

The image is built with debootstrap by the testbed (.ci/run starts that first, in the
background). The agent mounts an alias file into conf-enabled/, so the stock image serves the
gateway under /erangel/, and a modules file into mods-enabled/, so the fixture's CodeIgniter
.htaccess (RewriteEngine On) works; a route change is picked up by ``apache2ctl graceful`` via
exec. The container runs with every capability dropped but the measured SETUID, SETGID and KILL
(docs/node.md) and its tree mounted read-only: Apache's children still become www-data, and a
graceful reload still replaces them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from sdp_node.protocol import Credentials, SetRoutes
from sdp_testbed.erangel import HTACCESS, gateway_files
from sdp_testbed.ocp import OcpStandIn
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get, wait_for
from tests.support.agents import AgentProcess, free_port
from tests.support.names import NAMES
from tests.support.plans import deploy_gateway, run, spec

pytestmark = pytest.mark.apache


def test_real_apache_serves_the_gateway_and_reloads_routes_gracefully(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    apache_image: str, canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    with OcpStandIn("ocp-account") as ocp, OcpStandIn("sandbox-account") as sandbox_account:
        path, url = make_repo("erangel")
        commit = commit_files(path, branch="develop", message="1", files=gateway_files(
            revision="apache-1", ocp_urls={"account": ocp.url_for_containers}))
        agent = make_agent(name="gateway-1", node_type="GATEWAY", repositories=[{
            "name": "erangel", "url": url, "kind": "php", "image": apache_image,
            "health_path": "/erangel/healthz", "mount_target": "/var/www/html/erangel-ocean",
        }])
        port = free_port()
        outcome = run(agent.client(), deploy_gateway(spec(
            sandbox="apache", service="gateway", repository="erangel", branch="develop",
            commit=commit, port=port), {}), canary)
        assert outcome.ok, outcome.last()
        first = http_get(f"http://127.0.0.1:{port}/erangel/account/x").json()
        assert first["gateway_revision"] == "apache-1"
        assert first["body"]["service"] == "ocp-account"

        name = NAMES.container("apache", "gateway")
        before = docker_client.containers.get(name)
        assert before.attrs["Config"]["Image"] == apache_image
        host = before.attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and sorted(host["CapAdd"]) == ["KILL", "SETGID",
                                                                            "SETUID"]
        assert {m["Destination"]: m["RW"] for m in before.attrs["Mounts"]}[
            "/var/www/html/erangel-ocean"] is False
        children = _children(before)
        assert children, "Apache's children should run as www-data, not root"
        change = run(agent.client(), [SetRoutes(
            step_id="r", sandbox="apache", container=name,
            routes={"account": sandbox_account.url_for_containers})], None)
        assert change.ok, change.last()
        assert any("reloaded (apache2ctl graceful)" in line for line in change.logs())
        after = http_get(f"http://127.0.0.1:{port}/erangel/account/x").json()
        assert after["body"]["service"] == "sandbox-account"
        assert docker_client.containers.get(name).id == before.id
        # The reload replaced the children (the parent may signal them: CAP_KILL).
        wait_for(lambda: _children(before).isdisjoint(children) or None,
                 what="Apache's children replaced by the graceful reload", timeout=20)


def _children(container: docker.models.containers.Container) -> set[str]:
    """Host pids of the container's processes that run as www-data."""
    top = container.top(ps_args="-eo user,pid")
    return {row[1] for row in top["Processes"] if row[0] in ("www-data", "33")}


def erangel_repository(url: str, apache_image: str, **settings: Any) -> dict[str, Any]:
    return {"name": "erangel", "url": url, "kind": "php", "image": apache_image,
            "health_path": "/erangel/healthz", "mount_target": "/var/www/html/erangel-ocean",
            **settings}


def test_a_codeigniter_tree_with_its_htaccess_is_served_by_the_stock_image(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    apache_image: str, canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    """The image enables no mod_rewrite; the agent loads it from the image's own
    mods-available/ (apache_modules, default [rewrite]), so `RewriteEngine On` works and
    `/erangel/account/x` reaches index.php as `index.php/account/x`."""
    with OcpStandIn("ocp-account") as ocp:
        path, url = make_repo("erangel")
        files = gateway_files(revision="ci-1", ocp_urls={"account": ocp.url_for_containers})
        assert files[".htaccess"] == HTACCESS.encode()
        commit = commit_files(path, branch="develop", message="1", files=files)
        agent = make_agent(name="gateway-1", node_type="GATEWAY",
                           repositories=[erangel_repository(url, apache_image)])
        port = free_port()
        outcome = run(agent.client(), deploy_gateway(spec(
            sandbox="ci", service="gateway", repository="erangel", branch="develop",
            commit=commit, port=port), {}), canary)
        assert outcome.ok, outcome.last()
        base = f"http://127.0.0.1:{port}/erangel"
        rewritten = http_get(f"{base}/account/v1/login?x=1")
        assert rewritten.status == 200, rewritten.text
        assert rewritten.json()["path_info"] == "/account/v1/login"  # the rewrite ran
        assert rewritten.json()["body"]["service"] == "ocp-account"
        assert http_get(f"{base}/index.php/account/y").json()["path_info"] == "/account/y"
        assert http_get(f"{base}/application/config/production/config.php").status == 403
        container = docker_client.containers.get(NAMES.container("ci", "gateway"))
        assert container.attrs["Config"]["Image"] == apache_image
        modules = container.exec_run(["apache2ctl", "-M"]).output
        assert b"rewrite_module" in modules


def test_a_failing_health_check_shows_apaches_error_log(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    apache_image: str, canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    """Without the module (apache_modules: []), every request is a 500: the deploy's failure
    names Apache's own error line, not just 'last: HTTP 500'."""
    path, url = make_repo("erangel")
    commit = commit_files(path, branch="develop", message="1", files=gateway_files(
        revision="ci-2", ocp_urls={"account": "http://127.0.0.1:9"}))
    agent = make_agent(name="gateway-1", node_type="GATEWAY", repositories=[erangel_repository(
        url, apache_image, apache_modules=[], health_timeout_seconds=3)])
    outcome = run(agent.client(), deploy_gateway(spec(
        sandbox="ci-broken", service="gateway", repository="erangel", branch="develop",
        commit=commit, port=free_port()), {}), canary)
    assert not outcome.ok
    failure = outcome.last()
    invalid = "/var/www/html/erangel-ocean/current/.htaccess: Invalid command 'RewriteEngine'"
    assert "last: HTTP 500" in failure.message
    assert "its error log ends: [" in failure.message and invalid in failure.message
    assert any(invalid in line for line in outcome.logs())
    assert docker_client.containers.list(
        all=True, filters={"name": NAMES.container("ci-broken", "gateway")}) == []
