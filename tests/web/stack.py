"""A small real installation for the page's tests: git server repositories, two agents, a state.

``build_stack`` commits an ``account`` Go service (branches ``main``, ``feature/login-error``
and ``feature/broken``, which does not compile) and an ``erangel`` PHP gateway (``develop``),
starts a MICRO and a GATEWAY agent (real ``sdp-node`` processes; the gateway runs the php-cli
test image) and writes a state directory with the ``QA-DEFAULT`` template and the ``qa``
environment. Tests add sandboxes and run the real ``sdp-reconcile`` (``--once``, ``serve``)
as subprocesses with ``stack.env``. Sandbox names carry a random suffix, because container and
network names are global on the shared engine.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdp_node.protocol import Credentials
from sdp_testbed.erangel import gateway_files
from sdp_testbed.gitserver import GitServer
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files, init_bare
from sdp_testbed.waiting import wait_for_http
from tests.conftest import GO_CACHE
from tests.support.agents import AgentProcess, free_port
from tests.support.statedirs import (
    NodeEntry,
    commit_state,
    free_port_range,
    reconciler_env,
    write_environment,
    write_nodes,
    write_template,
)

BIN = Path(sys.executable).parent
JWT_SECRET_VALUE = "jwt-secret-value-never-shown"
OCP = {s: f"http://host.docker.internal:9/{s}-ocp" for s in ("account", "payment", "user")}


@dataclass
class WebStack:
    root: Path
    installation: str
    micro: AgentProcess
    gateway: AgentProcess
    state: Path
    history: Path
    env: dict[str, str]
    repos: dict[str, Path]
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:5].upper())

    def name(self, base: str) -> str:
        """A sandbox name unique to this stack (container names are global on the engine)."""
        return f"{base}-{self.suffix}"

    def reconcile(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "sdp-reconcile"), *args, "--state", str(self.state), "--history",
             str(self.history)],
            env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start_reconcile(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                [str(BIN / "sdp-reconcile"), *args, "--state", str(self.state), "--history",
                 str(self.history)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)

    def start_serve(self, *, log: Path, env: dict[str, str] | None = None
                    ) -> tuple[subprocess.Popen[bytes], str]:
        """``sdp-reconcile serve`` on a free port; (process, base URL) once /healthz answers."""
        port = free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(BIN / "sdp-reconcile"), "serve", "--state", str(self.state),
                 "--history", str(self.history), "--listen", f"127.0.0.1:{port}"],
                env=env or self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/healthz", timeout=30, what="sdp-reconcile serve")
        except TimeoutError:
            process.kill()
            raise
        return process, url

    def stop(self) -> None:
        for agent in (self.micro, self.gateway):
            agent.stop()


def _repo(git_server: GitServer, name: str) -> tuple[Path, str]:
    remote = f"{name}-{uuid.uuid4().hex[:8]}"
    path = git_server.repo_path(remote)
    init_bare(path)
    return path, git_server.repo_url(remote)


def php_gateway(url: str, images: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "erangel", "url": url, "kind": "php", "image": images["php-cli"],
        "command": ["php", "-S", "0.0.0.0:80", "/etc/sdp/router.php"], "init": True,
        "health_path": "/erangel/healthz", "mount_target": "/var/www/html/erangel-ocean",
        "health_timeout_seconds": 20,
    }


def build_stack(root: Path, *, installation: str, git_server: GitServer,
                images: dict[str, str], canary: Credentials,
                micro_settings: dict[str, Any] | None = None) -> WebStack:
    """``micro_settings``: more node.yaml settings of the MICRO agent."""
    account, account_url = _repo(git_server, "account")
    commit_files(account, branch="main", message="main",
                 files=go_service_files(service="account", revision="account main"))
    commit_files(account, branch="feature/login-error", base="main", message="login error",
                 files=go_service_files(service="account", revision="account login-error"))
    commit_files(account, branch="feature/broken", base="main", message="broken",
                 files=go_service_files(service="account", revision="broken",
                                        compile_error=True))
    erangel, erangel_url = _repo(git_server, "erangel")
    commit_files(erangel, branch="develop", message="develop",
                 files=gateway_files(revision="erangel develop", ocp_urls=OCP))
    micro = AgentProcess.create(
        root, name="micro-1", installation=installation, node_type="MICRO",
        repositories=[{"name": "account", "url": account_url, "kind": "go",
                       "image": images["micro"], "health_timeout_seconds": 20}],
        go_cache=str(GO_CACHE), **(micro_settings or {}))
    gateway = AgentProcess.create(
        root, name="gateway-1", installation=installation, node_type="GATEWAY",
        repositories=[php_gateway(erangel_url, images)], reload_command=[],
        go_cache=str(GO_CACHE))
    micro.start()
    try:
        gateway.start()
    except BaseException:
        micro.stop()
        raise
    state = root / "state"
    tokens = write_nodes(state, installation=installation, nodes=[
        NodeEntry(micro, "MICRO", ports=free_port_range()),
        NodeEntry(gateway, "GATEWAY", ports=free_port_range()),
    ])
    write_template(state, "QA-DEFAULT", gateway={"branch": "develop"}, environment="qa",
                   services={s: {"use_ocp": True} for s in ("account", "payment", "user")})
    write_environment(state, "qa", variables={"DB_HOST": "qa-db.internal.invalid",
                                              "DB_PORT": "5432"},
                      secrets={"JWT_SECRET": "SDP_SECRET_TEST_JWT"},
                      files=[{"path": "/etc/sdp/flags.json", "content": '{"banner": true}\n'}])
    env = reconciler_env(tokens=tokens, credentials=canary, runner="ci-runner",
                         SDP_SECRET_TEST_JWT=JWT_SECRET_VALUE, SDP_LEASE_SECONDS="10")
    return WebStack(root=root, installation=installation, micro=micro, gateway=gateway,
                    state=state, history=root / "history.sqlite", env=env,
                    repos={"account": account, "erangel": erangel})


__all__ = ["WebStack", "build_stack", "commit_state"]
