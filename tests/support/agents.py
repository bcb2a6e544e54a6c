"""Real ``sdp-node`` processes for tests: started by pid, stopped by pid, cleaned by label.

``AgentProcess.start`` writes a node.yaml, starts the console script with its token in the
environment (never argv), waits for /healthz and hands back a ``NodeClient``. ``stop``
terminates that pid; ``cleanup_instance`` removes the containers and networks labelled with
the test's installation name and the iptables chains of its agents (tagged with it), and
nothing else.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from sdp_node.isolation import remove_installation
from sdp_reconciler.observe.node_client import NodeClient
from sdp_testbed.waiting import wait_for, wait_for_http
from tests.support.names import PREFIX

BIN = Path(sys.executable).parent
AGENTS_ROOT = Path(tempfile.gettempdir()) / "sdp-test-agents"
"""Agents' folders live here, not under pytest's 0700 temporary directories: a gateway agent
lends its trees to an unprivileged user for composer, who must be able to reach them, as
under /var/lib/sdp on a VM. Searchable, not listable; each folder is removed at exit."""


def _agent_folder(name: str) -> Path:
    AGENTS_ROOT.mkdir(mode=0o711, exist_ok=True)
    AGENTS_ROOT.chmod(0o711)
    folder = AGENTS_ROOT / f"{uuid.uuid4().hex[:12]}-{name}"
    folder.mkdir(mode=0o755)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@dataclass
class AgentProcess:
    name: str
    installation: str
    workspace: Path
    config_path: Path
    port: int
    token: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    start_env: dict[str, str] = field(default_factory=dict)
    """extra environment of the agent process (e.g. a HOME with a hostile .gitconfig)"""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> NodeClient:
        return NodeClient(self.name, self.url, self.token, installation=self.installation,
                          timeout=60)

    @classmethod
    def create(
        cls, tmp: Path, *, name: str, installation: str, node_type: str,
        repositories: list[dict[str, Any]], **settings: Any,
    ) -> AgentProcess:
        link = tmp / name  # where a test looking under tmp finds it; a second agent of the
        if link.is_symlink():  # same name in one test shares the first one's folder
            folder = link.resolve()
        else:
            folder = _agent_folder(name)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder)
        port = free_port()
        token = secrets.token_hex(24)
        config = {
            "name": name,
            "type": node_type,
            "installation": installation,
            "resource_prefix": PREFIX,
            "listen": f"127.0.0.1:{port}",
            "token": {"env": "SDP_TEST_AGENT_TOKEN"},
            "workspace": str(folder / "workspace"),
            "repositories": repositories,
            **settings,
        }
        config_path = folder / "node.yaml"
        config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return cls(
            name=name, installation=installation, workspace=folder / "workspace",
            config_path=config_path, port=port, token=token, log_path=folder / "agent.log",
        )

    def start(self) -> NodeClient:
        env = {**os.environ, **self.start_env, "SDP_TEST_AGENT_TOKEN": self.token}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "sdp-node"), "--config", str(self.config_path)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_http(f"{self.url}/healthz", timeout=30, what=f"agent {self.name}")
        return self.client()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def cleanup_instance(client: docker.DockerClient, installation: str) -> None:
    """Remove every container and network labelled with this test installation, and the
    port isolation rules its agents wrote."""
    label = f"sdp.instance={installation}"
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": label}):
        network.remove()
    remove_installation(installation)


__all__ = ["AgentProcess", "cleanup_instance", "free_port", "wait_for"]
