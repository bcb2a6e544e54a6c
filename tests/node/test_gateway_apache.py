"""The gateway on a real Apache + mod_php image laid out like php:8.3-apache.

The image is built with debootstrap by the testbed (.ci/run starts that first, in the
background). The agent mounts an alias file into conf-enabled/, so the stock image serves the
gateway under /erangel/, and a route change is picked up by ``apache2ctl graceful`` via exec.
The container runs with every capability dropped but the measured SETUID, SETGID and KILL
(docs/node.md) and its tree mounted read-only: Apache's children still become www-data, and a
graceful reload still replaces them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from sdp_node.protocol import Credentials, SetRoutes
from sdp_testbed.erangel import gateway_files
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
