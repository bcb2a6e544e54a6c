"""A whole SDP installation on this machine, driven only through the CLI and HTTP.

``Stack`` holds: the git server with the fixture repositories (account, payment, user, erangel),
OCP stand-ins, a MICRO and a GATEWAY agent (real ``sdp-node`` processes), and a state
directory that is its own git repository (so the audit has authors). ``reconcile(...)`` runs the
real ``sdp-reconcile`` console script as a subprocess with the installation's environment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdp_testbed.erangel import gateway_files
from sdp_testbed.go_service import go_service_files
from sdp_testbed.ocp import OcpStandIn
from sdp_testbed.repos import commit_files
from tests.support.agents import AgentProcess
from tests.support.ports import port_block
from tests.support.statedirs import NodeEntry, commit_state, write_nodes

BIN = Path(sys.executable).parent
SERVICES = ("account", "payment", "user")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Stack:
    root: Path
    installation: str
    micro: AgentProcess
    gateway: AgentProcess
    repos: dict[str, Path]
    ocp: dict[str, OcpStandIn]
    env: dict[str, str]
    state: Path
    history: Path
    heads: dict[tuple[str, str], str] = field(default_factory=dict)

    # -- the state repository -------------------------------------------------------------------

    def write(self, relative: str, text: str) -> None:
        path = self.state / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def delete(self, relative: str) -> None:
        (self.state / relative).unlink()

    def commit_state(self, message: str, author: str = "Achmad <achmad@example.invalid>",
                     date: str | None = None) -> str:
        return commit_state(self.state, message, author=author, date=date)

    # -- fixture repositories --------------------------------------------------------------------

    def push_service(self, service: str, branch: str, revision: str, **options: Any) -> str:
        sha = commit_files(self.repos[service], branch=branch,
                           base="main" if branch != "main" else None,
                           files=go_service_files(service=service, revision=revision, **options),
                           message=revision)
        self.heads[(service, branch)] = sha
        return sha

    # -- running the CLI -------------------------------------------------------------------------

    def reconcile(self, *args: str, state: Path | None = None, history: Path | None = None,
                  env: dict[str, str | None] | None = None, timeout: float = 300) -> Run:
        """Run ``sdp-reconcile ARGS``; ``env`` adds variables (None: unset one)."""
        command = [str(BIN / "sdp-reconcile"), *args]
        if "--state" not in args and args[:1] != ("validate",):
            command += ["--state", str(state or self.state)]
        if args and args[0] in ("once", "restart", "plan", "reset", "status", "snapshot",
                                "drop-source", "drain") \
                and "--history" not in args:
            command += ["--history", str(history or self.history)]
        merged = {**self.env, **(env or {})}
        done = subprocess.run(
            command, env={k: v for k, v in merged.items() if v is not None},
            capture_output=True, text=True,
            timeout=timeout, cwd=self.root,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        command = [str(BIN / "sdp-reconcile"), *args, "--state", str(self.state),
                   "--history", str(self.history)]
        return subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=self.root)


def write_nodes_yaml(state: Path, installation: str, micro: AgentProcess,
                    gateway: AgentProcess) -> dict[str, str]:
    """nodes.yaml and the host config pinning the two agents; the environment they need."""
    # Ports of this run's own lane, so that two test runs on one engine never collide.
    return write_nodes(state, installation=installation, nodes=[
        NodeEntry(micro, "MICRO", port_block(100), token_env="SDP_TEST_MICRO_TOKEN"),
        NodeEntry(gateway, "GATEWAY", port_block(100), token_env="SDP_TEST_GATEWAY_TOKEN"),
    ])


QA_DEFAULT = """\
template: QA-DEFAULT
gateway:
  branch: develop
environment: qa
services:
  account:
    use_ocp: true
  payment:
    use_ocp: true
  user:
    use_ocp: true
"""

QA_ENV = """\
environment: qa
variables:
  DB_HOST: qa-db.internal.invalid
secrets:
  JWT_SECRET: {env: SDP_SECRET_TEST_JWT}
"""


def sandbox_yaml(name: str, *, account_branch: str | None, extra: str = "") -> str:
    services = f"services:\n  account:\n    branch: {account_branch}\n" if account_branch else ""
    return f"sandbox: {name}\nextends: QA-DEFAULT\n{services}{extra}"


def build_stack(root: Path, installation: str, make_agent: Any, make_repo: Any,
                images: dict[str, str], canary: Any,
                micro_settings: dict[str, Any] | None = None, *, apache_image: str | None = None,
                health_timeout: float = 20) -> Stack:
    """The installation; ``micro_settings``: more node.yaml settings of the MICRO agent; with
    ``apache_image``, the gateway is a real Apache + mod_php served as in production (alias
    file, graceful reload) instead of ``php -S``."""
    ocp = {name: OcpStandIn(f"ocp-{name}") for name in SERVICES}
    for stand_in in ocp.values():
        stand_in.start()
    repos: dict[str, Path] = {}
    urls: dict[str, str] = {}
    for service in (*SERVICES, "erangel"):
        repos[service], urls[service] = make_repo(service)
    stack_heads: dict[tuple[str, str], str] = {}
    for service in SERVICES:
        stack_heads[(service, "main")] = commit_files(
            repos[service], branch="main", message="main",
            files=go_service_files(service=service, revision=f"{service} main"))
    stack_heads[("account", "feature/login-error")] = commit_files(
        repos["account"], branch="feature/login-error", base="main", message="login-error",
        files=go_service_files(service="account", revision="account login-error 1"))
    commit_files(repos["erangel"], branch="develop", message="develop", files=gateway_files(
        revision="erangel develop", ocp_urls={n: s.url_for_containers for n, s in ocp.items()}))
    micro = make_agent(name="micro-1", repositories=[
        {"name": s, "url": urls[s], "kind": "go", "image": images["micro"],
         "health_timeout_seconds": health_timeout} for s in SERVICES], **(micro_settings or {}))
    if apache_image is not None:
        gateway = make_agent(name="gateway-1", node_type="GATEWAY", repositories=[{
            "name": "erangel", "url": urls["erangel"], "kind": "php", "image": apache_image,
            "health_path": "/erangel/healthz", "mount_target": "/var/www/html/erangel-ocean",
            "health_timeout_seconds": health_timeout}])
    else:
        gateway = make_agent(name="gateway-1", node_type="GATEWAY", reload_command=[],
                             repositories=[{
                                 "name": "erangel", "url": urls["erangel"], "kind": "php",
                                 "image": images["php-cli"],
                                 "command": ["php", "-S", "0.0.0.0:80", "/etc/sdp/router.php"],
                                 "init": True, "health_path": "/erangel/healthz",
                                 "mount_target": "/var/www/html/erangel-ocean",
                                 "health_timeout_seconds": health_timeout}])
    state = root / "state-repo"
    state.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(state)], check=True)
    env = {
        **os.environ,
        "SDP_SPEC_HASH_KEY": secrets.token_hex(16),
        "SDP_TEST_MICRO_TOKEN": micro.token,
        "SDP_TEST_GATEWAY_TOKEN": gateway.token,
        "SDP_SECRET_TEST_JWT": "jwt-" + secrets.token_hex(8),
        "SDP_GIT_USERNAME": canary.username.reveal(),
        "SDP_GIT_PASSWORD": canary.password.reveal(),
        "SDP_RUNNER": "ci-runner",
        "SDP_LEASE_SECONDS": "6",
    }
    stack = Stack(root=root, installation=installation, micro=micro, gateway=gateway,
                  repos=repos, ocp=ocp, env=env, state=state, history=root / "history.sqlite",
                  heads=stack_heads)
    env.update(write_nodes_yaml(state, installation, micro, gateway))
    stack.write("templates/QA-DEFAULT.yaml", QA_DEFAULT)
    stack.write("environments/qa.yaml", QA_ENV)
    return stack


def stop_stack(stack: Stack) -> None:
    for stand_in in stack.ocp.values():
        stand_in.stop()


def clone_state(stack: Stack, dest: Path) -> Path:
    """A fresh clone of the state repository (what a CI job checks out)."""
    subprocess.run(["git", "clone", "-q", str(stack.state), str(dest)], check=True)
    return dest
