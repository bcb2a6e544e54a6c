"""The floor the engine imposes on ``bench_parallel.py``: only the Docker work of SDP's pass.

``RawEngine.capture`` inspects the containers an SDP variant has just deployed (its services
on their sandbox networks and its gateways on the default bridge) and keeps, for each one,
what SDP asked Docker for: image, command, env, labels, exposed port, host config (port
binding, bind mounts, restart policy, init, limits, capabilities, extra hosts) and network
alias. The bind-mounted trees and binaries are copied into the bench's workdir, so the
agents' pruning cannot take them away.

``RawEngine.deploy`` then does for new names exactly the engine work of SDP's pass from a
thread pool as wide as the agents' ``apply_workers``: one network per sandbox (a /27 from
``subnet_range``, like the agents'), one iptables-restore of a chain that rejects foreign
sources to the same published ports (as the port guard writes once per plan), the 3N
service containers created and started, each polled on its health path until it answered
2xx twice in a row (what SDP waits for), and then the N gateways (SDP's routes phase). No
git, no build, no inspect or listing beyond that, no history, no HTTP between processes.
``remove`` takes it all down again (untimed).
"""

from __future__ import annotations

import ipaddress
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from sdp_node.isolation import Iptables, chain_name, comment, remove_chain, write_chain

HEALTH_SUCCESSES = 2
POLL_SECONDS = 0.02
HEALTH_TIMEOUT = 10.0


@dataclass(frozen=True)
class CapturedContainer:
    """What SDP asked Docker for, for one container of one sandbox."""

    sandbox_index: int
    role: str  # "service" or "gateway"
    alias: str | None
    image: str
    command: list[str] | None
    env: list[str]
    labels: dict[str, str]
    exposed: list[int]
    """container ports (docker-py adds ``/tcp`` itself)"""
    host_config: dict[str, Any]
    host_port: int
    health_path: str


@dataclass
class RawEngine:
    docker: docker.DockerClient
    workdir: Path
    labels: dict[str, str]
    """the bench's labels (its cleanup removes what carries them)"""
    installation: str
    subnet_range: str
    workers: int
    gateway_health_path: str
    captured: list[CapturedContainer] = field(default_factory=list)
    _sources: dict[str, str] = field(default_factory=dict)
    _networks: list[str] = field(default_factory=list)
    _containers: list[str] = field(default_factory=list)

    @property
    def api(self) -> docker.APIClient:
        return self.docker.api

    @property
    def chain(self) -> str:
        return chain_name(self.installation, "raw-engine")

    # -- capturing SDP's requests -------------------------------------------------------------

    def capture(self, sandboxes: list[str]) -> None:
        """Record the containers of ``sandboxes`` (SDP's, running) as requests to replay."""
        index = {name: i for i, name in enumerate(sandboxes)}
        found = self.api.containers(filters={"label": ["sdp.sandbox"]})
        captured = []
        for summary in found:
            sandbox = (summary.get("Labels") or {}).get("sdp.sandbox")
            if sandbox not in index:
                continue
            raw = self.api.inspect_container(summary["Id"])
            captured.append(self._request(raw, index[sandbox]))
        self.captured = sorted(captured, key=lambda c: (c.sandbox_index, c.role, c.alias or ""))

    def _request(self, raw: dict[str, Any], sandbox_index: int) -> CapturedContainer:
        config, host = raw["Config"], dict(raw["HostConfig"])
        labels = dict(config.get("Labels") or {})
        role = labels.get("sdp.kind", "service")
        host["Binds"] = [self._copied(bind) for bind in host.get("Binds") or []]
        if role == "service":
            host["NetworkMode"] = "placeholder"  # the raw sandbox network, set at create
        (binding,) = [b for bindings in (host.get("PortBindings") or {}).values()
                      for b in bindings]
        labels["sdp.instance"] = f"{self.installation}-raw"
        labels.update(self.labels)
        networks = raw["NetworkSettings"]["Networks"]
        aliases = [a for n in networks.values() for a in (n.get("Aliases") or [])
                   if a == labels.get("sdp.service")]
        return CapturedContainer(
            sandbox_index=sandbox_index, role=role, alias=aliases[0] if aliases else None,
            image=config["Image"], command=config.get("Cmd"), env=list(config.get("Env") or []),
            labels=labels,
            exposed=[int(p.split("/")[0]) for p in config.get("ExposedPorts") or {}],
            host_config=host, host_port=int(binding["HostPort"]),
            health_path=self.gateway_health_path if role == "gateway" else "/healthz",
        )

    def _copied(self, bind: str) -> str:
        source, rest = bind.split(":", 1)
        if source not in self._sources:
            target = self.workdir / "raw-mounts" / str(len(self._sources)) / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if Path(source).is_dir():
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copy2(source, target)
            self._sources[source] = str(target)
        return f"{self._sources[source]}:{rest}"

    # -- the timed part ----------------------------------------------------------------------

    def deploy(self, *, tag: str) -> float:
        """Networks, guard, services (healthy), gateways (healthy), from nothing; seconds."""
        if not self.captured:
            raise RuntimeError("raw engine: nothing captured from an SDP variant yet")
        sandboxes = sorted({c.sandbox_index for c in self.captured})
        subnets = list(ipaddress.ip_network(self.subnet_range).subnets(new_prefix=27))
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            networks = dict(zip(sandboxes, pool.map(
                lambda i: self._network(f"{tag}-{i:03d}", str(subnets[i])), sandboxes),
                strict=True))
            self._guard([c.host_port for c in self.captured if c.role == "service"])
            for role in ("service", "gateway"):
                batch = [c for c in self.captured if c.role == role]
                list(pool.map(lambda c: self._container(c, tag=tag, network=networks[
                    c.sandbox_index]), batch))
        return time.perf_counter() - start

    def _network(self, name: str, subnet: str) -> str:
        engine_name = f"sdpraw-{name}"
        self.api.create_network(
            engine_name, driver="bridge", labels={**self.labels, "sdp.raw": "1"},
            ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]),
            check_duplicate=True)
        self._networks.append(engine_name)
        return engine_name

    def _guard(self, ports: list[int]) -> None:
        """One rewrite of a chain like the port guard's, with its jumps (SDP: once a plan)."""
        write_chain(Iptables("iptables"), self.chain, comment(self.installation, "raw-engine"),
                    ports=ports, sources=["172.17.0.0/16"])

    def _container(self, request: CapturedContainer, *, tag: str, network: str) -> None:
        name = f"sdpraw-{tag}-{request.sandbox_index:03d}-{request.alias or request.role}"
        host = dict(request.host_config)
        networking = None
        if request.role == "service":
            host["NetworkMode"] = network
            networking = {"EndpointsConfig": {network: {"Aliases": [request.alias]}}}
        created = self.api.create_container(
            request.image, command=request.command, name=name, environment=request.env,
            labels=request.labels, ports=request.exposed, host_config=host,
            networking_config=networking, detach=True)
        self._containers.append(created["Id"])
        self.api.start(created["Id"])
        if not _wait_healthy(request.host_port, request.health_path):
            state = self.api.inspect_container(created["Id"])["State"]
            logs = self.api.logs(created["Id"], tail=10).decode(errors="replace")
            raise RuntimeError(f"raw engine: {name} never answered {request.health_path} on "
                               f"port {request.host_port} 2xx twice ({state}):\n{logs}")

    # -- untimed ----------------------------------------------------------------------------

    def remove(self) -> None:
        for ident in self._containers:
            self.api.remove_container(ident, force=True)
        for name in self._networks:
            self.api.remove_network(name)
        self._containers.clear()
        self._networks.clear()
        remove_chain(Iptables("iptables"), self.chain)


def _wait_healthy(port: int, path: str) -> bool:
    """``path`` answered 2xx twice in a row (SDP's health_successes of the bench)."""
    deadline = time.monotonic() + HEALTH_TIMEOUT
    streak = 0
    while streak < HEALTH_SUCCESSES:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1.0) as r:
                streak = streak + 1 if 200 <= r.status < 300 else 0
        except (urllib.error.URLError, OSError):
            streak = 0
        if streak >= HEALTH_SUCCESSES:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
