"""An SDP installation for benchmarks: git server, fixture repositories, two agents, a state repo.

Like ``tests/e2e/stack.py``, but with fixed port ranges that no test uses, sandbox names unique
to the run, and everything registered with the ``Bench`` for cleanup. ``reconcile(...)`` runs
the real ``sdp-reconcile`` console script as a subprocess (what CI runs), timed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import BIN, Bench, GitServerProcess

from sdp_testbed.erangel import gateway_files
from sdp_testbed.go_service import go_service_files
from sdp_testbed.ocp import OcpStandIn
from sdp_testbed.repos import commit_files
from tests.support.agents import AgentProcess
from tests.support.names import PREFIX

SERVICES = ("account", "payment", "user")


@dataclass
class Reconcile:
    code: int
    seconds: float
    stdout: str
    stderr: str


@dataclass
class SdpStack:
    bench: Bench
    git: GitServerProcess
    repos: dict[str, Path]
    micro: AgentProcess
    gateway: AgentProcess
    ocp: dict[str, OcpStandIn]
    state: Path
    history: Path
    env: dict[str, str]
    heads: dict[tuple[str, str], str] = field(default_factory=dict)

    def write(self, relative: str, text: str) -> None:
        path = self.state / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit_state(self, message: str) -> None:
        env = {**os.environ, "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
               "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@invalid"}
        subprocess.run(["git", "-C", str(self.state), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(self.state), "commit", "-q", "--allow-empty", "-m",
                        message], check=True, env=env)

    def push(self, service: str, branch: str, revision: str) -> str:
        sha = commit_files(self.repos[service], branch=branch, message=revision,
                           base="main" if branch != "main" else None,
                           files=go_service_files(service=service, revision=revision))
        self.heads[(service, branch)] = sha
        return sha

    def reconcile(self, *args: str, timeout: float = 3600) -> Reconcile:
        command = [str(BIN / "sdp-reconcile"), *args, "--state", str(self.state),
                   "--history", str(self.history)]
        start = time.perf_counter()
        done = subprocess.run(command, env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.bench.workdir)
        return Reconcile(done.returncode, time.perf_counter() - start, done.stdout, done.stderr)

    def tree(self, service: str, commit: str) -> Path:
        """The folder of the binary the agent built of ``service`` at ``commit``
        (``builds/<repository>/<commit>/app-<repository>``, sdp_node/build.py)."""
        return self.micro.workspace / "builds" / service / commit


def build_stack(
    bench: Bench, *, images: dict[str, str], micro_ports: tuple[int, int],
    gateway_ports: tuple[int, int], subnet_range: str,
    branches: dict[str, list[str]] | None = None, apache: bool = False,
) -> SdpStack:
    """The installation; ``apache``: the gateway is the Apache + mod_php image (``images``
    must hold ``php-apache``), served and reloaded as in production, instead of ``php -S``."""
    git = bench.git_server()
    ocp = {name: OcpStandIn(f"ocp-{name}") for name in SERVICES}
    for stand_in in ocp.values():
        stand_in.start()
        bench.defer(f"OCP stand-in {stand_in.name}", stand_in.stop)
    repos: dict[str, Path] = {}
    urls: dict[str, str] = {}
    heads: dict[tuple[str, str], str] = {}
    for service in (*SERVICES, "erangel"):
        repos[service], urls[service] = git.make_repo(service)
    for service in SERVICES:
        heads[(service, "main")] = commit_files(
            repos[service], branch="main", message="main",
            files=go_service_files(service=service, revision=f"{service} main"))
        for branch in (branches or {}).get(service, []):
            heads[(service, branch)] = commit_files(
                repos[service], branch=branch, base="main", message=branch,
                files=go_service_files(service=service, revision=f"{service} {branch}"))
    commit_files(repos["erangel"], branch="develop", message="develop", files=gateway_files(
        revision="erangel develop", ocp_urls={n: s.url_for_containers for n, s in ocp.items()}))
    micro = bench.agent(name="micro-1", subnet_range=subnet_range, repositories=[
        {"name": s, "url": urls[s], "kind": "go", "image": images["micro"],
         "health_timeout_seconds": 30} for s in SERVICES])
    gateway = bench.agent(name="gateway-1", node_type="GATEWAY", repositories=[{
        "name": "erangel", "url": urls["erangel"], "kind": "php", "image": images["php-apache"],
        "health_path": "/erangel/healthz", "mount_target": "/var/www/html/erangel-ocean",
        "health_timeout_seconds": 30}]) if apache else \
        bench.agent(name="gateway-1", node_type="GATEWAY", reload_command=[],
                          repositories=[{
                              "name": "erangel", "url": urls["erangel"], "kind": "php",
                              "image": images["php-cli"],
                              "command": ["php", "-S", "0.0.0.0:80", "/etc/sdp/router.php"],
                              "init": True, "health_path": "/erangel/healthz",
                              "mount_target": "/var/www/html/erangel-ocean",
                              "health_timeout_seconds": 30}])
    state = bench.workdir / "state"
    state.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(state)], check=True)
    env = {
        **os.environ,
        "SDP_SPEC_HASH_KEY": secrets.token_hex(16),
        "SDP_BENCH_MICRO_TOKEN": micro.token,
        "SDP_BENCH_GATEWAY_TOKEN": gateway.token,
        "SDP_GIT_USERNAME": git.username,
        "SDP_GIT_PASSWORD": git.password,
        "SDP_RUNNER": "bench",
    }
    stack = SdpStack(bench=bench, git=git, repos=repos, micro=micro, gateway=gateway, ocp=ocp,
                     state=state, history=bench.workdir / "history.sqlite", env=env,
                     heads=heads)
    stack.write("nodes.yaml", nodes_yaml(bench.installation, micro, gateway,
                                         micro_ports=micro_ports, gateway_ports=gateway_ports))
    host = bench.workdir / "reconciler.yaml"
    host.write_text(host_config(bench.installation, micro, gateway))
    env["SDP_RECONCILER_CONFIG"] = str(host)
    return stack


def host_config(installation: str, micro: AgentProcess, gateway: AgentProcess) -> str:
    """The bench reconciler host's config: the two agents pinned, the key by reference."""
    return json.dumps({
        "installation": installation,
        "spec_hash_key": {"env": "SDP_SPEC_HASH_KEY"},
        "agents": {
            micro.name: {"url": micro.url, "token": {"env": "SDP_BENCH_MICRO_TOKEN"}},
            gateway.name: {"url": gateway.url, "token": {"env": "SDP_BENCH_GATEWAY_TOKEN"}},
        },
    }, indent=1) + "\n"


def nodes_yaml(installation: str, micro: AgentProcess, gateway: AgentProcess, *,
               micro_ports: tuple[int, int], gateway_ports: tuple[int, int]) -> str:
    nodes: dict[str, Any] = {
        "installation": installation,
        "resource_prefix": PREFIX,  # the agents' (tests.support.agents writes it in node.yaml)
        "nodes": [
            {"name": micro.name, "type": "MICRO", "agent_url": micro.url,
             "address": "host.docker.internal", "public_address": "127.0.0.1",
             "ports": {"first": micro_ports[0], "last": micro_ports[1]}},
            {"name": gateway.name, "type": "GATEWAY", "agent_url": gateway.url,
             "address": "host.docker.internal", "public_address": "127.0.0.1",
             "ports": {"first": gateway_ports[0], "last": gateway_ports[1]}},
        ],
    }
    return json.dumps(nodes, indent=1) + "\n"


def sandbox_yaml(name: str, services: dict[str, dict[str, Any]]) -> str:
    """A sandbox file: the gateway on develop and each service as given."""
    lines = [f"sandbox: {name}", "gateway:", "  branch: develop", "services:"]
    for service, entry in services.items():
        lines.append(f"  {service}: {json.dumps(entry)}")
    return "\n".join(lines) + "\n"
