"""State directories for tests that run the real reconciler against real agents.

``write_nodes`` writes ``nodes.yaml`` naming the given agents (their URLs, and their tokens
as ``{env: ...}`` references) and returns the environment variables those references need;
``write_sandbox``, ``write_template`` and ``write_environment`` write one state file each;
``reconciler_env`` puts together the environment a ``sdp-reconcile`` subprocess runs with
(git credentials, spec-hash key, agent tokens, runner); ``commit_state`` makes the directory
a git repository so the audit names an author. Files are written as JSON, which is YAML.
Nothing here starts a process or touches Docker.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdp_node.protocol import Credentials
from tests.support.agents import AgentProcess
from tests.support.names import PREFIX
from tests.support.ports import port_block


@dataclass(frozen=True)
class NodeEntry:
    """One node of nodes.yaml, served by a running test agent."""

    agent: AgentProcess
    type: str
    """MICRO, GATEWAY or INFRA (the agent must have been started with the same type)."""
    ports: tuple[int, int]
    address: str = "host.docker.internal"
    public_address: str = "127.0.0.1"
    token_env: str | None = None
    """Variable holding the token (default ``SDP_TEST_TOKEN_<NAME>``)."""

    @property
    def token_variable(self) -> str:
        return self.token_env or "SDP_TEST_TOKEN_" + self.agent.name.upper().replace("-", "_")


def free_port_range(size: int = 20) -> tuple[int, int]:
    """A block of ``size`` ports that are free now and no other test run uses (first, last)."""
    return port_block(size)


def _write(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def host_config_path(state: Path) -> Path:
    """Where the tests keep the reconciler host config of ``state``: beside it, never in it."""
    return state.parent / f"{state.name}-reconciler.yaml"


def write_nodes(state: Path, *, installation: str, nodes: Sequence[NodeEntry],
                spec_key_env: str = "SDP_SPEC_HASH_KEY",
                extra_nodes: Sequence[Mapping[str, Any]] = (),
                host: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write ``state/nodes.yaml`` and the reconciler host config pinning its agents (beside
    the state directory); return the environment a reconciler needs for them: each agent's
    token variable and ``SDP_RECONCILER_CONFIG``.

    ``extra_nodes`` are written as given (e.g. a node whose agent is not running); their
    ``agent_url`` and ``agent_token`` become their pin. ``host`` adds settings to the host
    config (``secrets``, ``page``).
    """
    pins: dict[str, Any] = {
        entry.agent.name: {"url": entry.agent.url, "token": {"env": entry.token_variable}}
        for entry in nodes
    }
    extra: list[dict[str, Any]] = []
    for node in extra_nodes:
        node = dict(node)
        url, token = node.pop("agent_url", None), node.pop("agent_token", None)
        if url is not None and token is not None:
            pins[str(node["name"])] = {"url": url, "token": token}
        extra.append(node)
    document = {
        "installation": installation,
        "resource_prefix": PREFIX,
        "nodes": [
            {
                "name": entry.agent.name, "type": entry.type, "agent_url": entry.agent.url,
                "address": entry.address, "public_address": entry.public_address,
                "ports": {"first": entry.ports[0], "last": entry.ports[1]},
            }
            for entry in nodes
        ] + extra,
    }
    _write(state / "nodes.yaml", document)
    config = host_config_path(state)
    _write(config, {"installation": installation, "spec_hash_key": {"env": spec_key_env},
                    "agents": pins, **(host or {})})
    return {**{entry.token_variable: entry.agent.token for entry in nodes},
            "SDP_RECONCILER_CONFIG": str(config)}


def _sandbox_shape(*, extends: str | None, gateway: Mapping[str, Any] | None,
                   services: Mapping[str, Mapping[str, Any]] | None, environment: str | None,
                   resources: Mapping[str, Any] | None,
                   lifecycle: Mapping[str, Any] | None) -> dict[str, Any]:
    shape: dict[str, Any] = {}
    for key, value in (("extends", extends), ("gateway", gateway), ("environment", environment),
                       ("resources", resources), ("lifecycle", lifecycle)):
        if value is not None:
            shape[key] = value
    if services:
        shape["services"] = {name: dict(spec) for name, spec in services.items()}
    return shape


def write_sandbox(
    state: Path, name: str, *, extends: str | None = None,
    gateway: Mapping[str, Any] | None = None,
    services: Mapping[str, Mapping[str, Any]] | None = None, environment: str | None = None,
    resources: Mapping[str, Any] | None = None, lifecycle: Mapping[str, Any] | None = None,
) -> Path:
    """``state/sandboxes/<name>.yaml``; services like ``{"account": {"branch": "main"}}``."""
    return _write(state / "sandboxes" / f"{name}.yaml", {"sandbox": name, **_sandbox_shape(
        extends=extends, gateway=gateway, services=services, environment=environment,
        resources=resources, lifecycle=lifecycle)})


def write_template(
    state: Path, name: str, *, extends: str | None = None,
    gateway: Mapping[str, Any] | None = None,
    services: Mapping[str, Mapping[str, Any]] | None = None, environment: str | None = None,
    resources: Mapping[str, Any] | None = None, lifecycle: Mapping[str, Any] | None = None,
) -> Path:
    return _write(state / "templates" / f"{name}.yaml", {"template": name, **_sandbox_shape(
        extends=extends, gateway=gateway, services=services, environment=environment,
        resources=resources, lifecycle=lifecycle)})


def write_environment(
    state: Path, name: str, *, variables: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None, files: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """``secrets`` maps a variable to the *name* of the host variable holding its value."""
    document: dict[str, Any] = {"environment": name}
    if variables:
        document["variables"] = dict(variables)
    if secrets:
        document["secrets"] = {k: {"env": v} for k, v in secrets.items()}
    if files:
        document["files"] = [dict(f) for f in files]
    return _write(state / "environments" / f"{name}.yaml", document)


def reconciler_env(
    *, tokens: Mapping[str, str], credentials: Credentials, runner: str = "test-runner",
    spec_key_env: str = "SDP_SPEC_HASH_KEY", **extra: str,
) -> dict[str, str]:
    """The environment of a ``sdp-reconcile`` subprocess (the test's own plus SDP's)."""
    return {
        **os.environ,
        spec_key_env: secrets.token_hex(16),
        "SDP_GIT_USERNAME": credentials.username.reveal(),
        "SDP_GIT_PASSWORD": credentials.password.reveal(),
        "SDP_RUNNER": runner,
        **tokens,
        **extra,
    }


def commit_state(state: Path, message: str = "state",
                 author: str = "Tester <tester@example.invalid>", date: str | None = None) -> str:
    """Commit everything under ``state``: additions, edits, deletions (a git repository is
    made on first use); ``date`` back-dates the commit (ISO 8601)."""
    name, _, email = author.partition(" <")
    email = email.rstrip(">")
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    if date is not None:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    if not (state / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(state)], check=True, env=env)
    subprocess.run(["git", "-C", str(state), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(state), "commit", "-q", "--allow-empty", "-m", message],
                   check=True, env=env)
    return subprocess.run(["git", "-C", str(state), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True, env=env).stdout.strip()
