"""Docker, for one agent: only objects with this node's and installation's labels.

Responsible for every Docker engine call the agent makes. Promises:

* it lists, changes and removes only containers and networks labelled ``sdp.managed=true`` with
  this agent's ``sdp.instance`` and ``sdp.node``; a foreign object in the way (a container with
  the wanted name, a container publishing the wanted port) raises ``Conflict`` naming it and is
  never touched;
* it never pulls: a missing image is ``ImageMissing`` naming the image, the node and the
  ``docker load -i`` remedy (the low-level create call does not pull, and we check first);
* sandbox networks get a subnet of their own from the node's ``subnet_range`` (Docker's default
  pools stop at about 30 networks);
* every container it creates is hardened as its ``RunSpec`` says (pids limit,
  ``no-new-privileges``, capabilities dropped to a list, read-only mounts);
* what Docker reports about a container reaches the rest of the agent as a typed
  ``ContainerDetails``, never as Docker's raw dict;
* docker's exceptions are translated here;
* with ``shared_engine: true`` in node.yaml (several agents on one engine: tests, demos) the
  engine's names of its containers and networks end in ``.{node}``, so that two agents can run
  the same sandbox's container at once (a move across nodes); everything the agent reads and
  reports uses the plan's names, without it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import IPAMConfig, IPAMPool
from msgspec import Struct, field
from msgspec.structs import replace

from sdp_node.config import NodeConfig
from sdp_node.errors import (
    BadRequest,
    Conflict,
    ContainerError,
    CrashedOnStart,
    HealthCheckFailed,
    ImageMissing,
    NodeError,
)
from sdp_node.protocol import (
    ASIDE_SUFFIX,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    NEXT_SUFFIX,
    ContainerStats,
    ObservedContainer,
    ObservedNetwork,
)

__all__ = ["ASIDE_SUFFIX", "NEXT_SUFFIX"]  # re-exported: the agent's names for them

_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
Runtime = tuple[datetime | None, int, str | None]
"""started at, restart count, health"""
STOP_TIMEOUT = 10
HEALTH_FIRST_DELAY = 0.02
"""seconds before the second probe of a container that did not answer yet (then x1.5 each)"""
HEALTH_STREAK_DELAY = 0.02
"""seconds between the probes of a streak of 2xx answers (``health_successes``)"""
Log = Callable[[str], None]


class Mount(Struct, frozen=True):
    source: str
    target: str
    read_only: bool = True


class Confinement(Struct, frozen=True):
    """What a container may do beyond its image's defaults."""

    pids_limit: int | None = None
    no_new_privileges: bool = False
    capabilities: tuple[str, ...] | None = None
    """None keeps Docker's default set; a tuple drops ALL and adds these back"""


class RunSpec(Struct, frozen=True):
    name: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    container_port: int
    host_port: int
    mounts: list[Mount]
    network: str | None
    alias: str | None
    nano_cpus: int | None
    memory_bytes: int | None
    init: bool
    confinement: Confinement = field(default_factory=Confinement)


class ContainerDetails(Struct, frozen=True):
    """One container as Docker reports it, in the terms the agent uses."""

    id: str
    name: str
    labels: Mapping[str, str]
    running: bool
    status: str
    """Docker's state: created, running, exited, ..."""

    @classmethod
    def from_inspect(cls, raw: Mapping[str, Any]) -> ContainerDetails:
        state = raw.get("State") or {}
        return cls(
            id=str(raw["Id"]),
            name=str(raw.get("Name", "")).lstrip("/"),
            labels=dict((raw.get("Config") or {}).get("Labels") or {}),
            running=bool(state.get("Running")),
            status=str(state.get("Status", "unknown")),
        )

    def label(self, key: str, default: str = "") -> str:
        return self.labels.get(key, default)


class PortHolder(Struct, frozen=True):
    """The container (of any owner) that publishes a host port."""

    name: str
    labels: Mapping[str, str]


def _confinement(confinement: Confinement) -> dict[str, Any]:
    """Docker host-config settings for ``confinement``."""
    settings: dict[str, Any] = {}
    if confinement.pids_limit is not None:
        settings["pids_limit"] = confinement.pids_limit
    if confinement.no_new_privileges:
        settings["security_opt"] = ["no-new-privileges"]
    if confinement.capabilities is not None:
        settings["cap_drop"] = ["ALL"]
        if confinement.capabilities:
            settings["cap_add"] = list(confinement.capabilities)
    return settings


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    with contextlib.suppress(ValueError):
        trimmed = value.rstrip("Z")
        if "." in trimmed:
            head, fraction = trimmed.split(".", 1)
            trimmed = f"{head}.{fraction[:6]}"
        return datetime.fromisoformat(trimmed + "+00:00")
    return None


class Engine:
    def __init__(self, config: NodeConfig, client: docker.DockerClient | None = None) -> None:
        self.config = config
        try:
            # Steps of a plan, the sampler and the API share the client: a connection each.
            self.client = client or docker.from_env(
                timeout=120, max_pool_size=max(10, config.workers + 6))
            self.api = self.client.api
        except DockerException as e:
            raise NodeError(f"cannot reach the Docker engine: {e}") from e
        self._runtime_cache: dict[str, tuple[tuple[str, str], Runtime]] = {}
        self._runtime_lock = threading.Lock()
        self._overlays = config.workspace / "labels"
        self._overlays.mkdir(parents=True, exist_ok=True)
        self._suffix = f".{config.name}" if config.shared_engine else ""

    # -- names on a shared engine ------------------------------------------------------------------

    def engine_name(self, name: str) -> str:
        """The engine's name of container or network ``name`` (the plan's name)."""
        return name + self._suffix

    def plan_name(self, engine_name: str) -> str:
        """The plan's name of a container or network the engine calls ``engine_name``."""
        if self._suffix and engine_name.endswith(self._suffix):
            return engine_name.removesuffix(self._suffix)
        return engine_name

    # -- labels a running container has moved on from ----------------------------------------------

    def set_labels(self, ident: str, labels: dict[str, str]) -> None:
        """Labels that replace Docker's for container ``ident`` (a full id) in everything the
        agent reads: a gateway that switched commits inside its running container (Docker's
        labels cannot change) runs another commit and spec than it was created with."""
        path = self._overlays / f"{ident}.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(labels, sort_keys=True))
        os.replace(partial, path)

    def _overlay(self, ident: str, labels: Mapping[str, str]) -> dict[str, str]:
        try:
            extra = json.loads((self._overlays / f"{ident}.json").read_text())
        except (OSError, ValueError):
            return dict(labels)
        return {**labels, **{str(k): str(v) for k, v in extra.items()}}

    def _forget_overlay(self, ident: str) -> None:
        if re.fullmatch(r"[0-9a-f]{64}", ident):
            (self._overlays / f"{ident}.json").unlink(missing_ok=True)

    # -- ownership -------------------------------------------------------------------------------

    def own_labels(self, **extra: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_INSTANCE: self.config.installation,
            LABEL_NODE: self.config.name,
            **extra,
        }

    def _filters(self) -> dict[str, list[str]]:
        return {"label": [f"{k}={v}" for k, v in self.own_labels().items()]}

    def is_own(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(labels.get(k) == v for k, v in self.own_labels().items())

    @staticmethod
    def describe_owner(labels: dict[str, str] | None) -> str:
        labels = labels or {}
        if labels.get(LABEL_MANAGED) != "true":
            return "it has no SDP labels"
        return (
            f"it belongs to SDP installation {labels.get(LABEL_INSTANCE)!r} node "
            f"{labels.get(LABEL_NODE)!r}"
        )

    # -- reading ---------------------------------------------------------------------------------

    def list_containers(self) -> list[ObservedContainer]:
        try:
            summaries = self.api.containers(all=True, filters=self._filters())
        except DockerException as e:
            raise NodeError(f"cannot list containers: {e}") from e
        runtime = self._runtime(summaries)
        observed = []
        for summary in summaries:
            name = self.plan_name(summary["Names"][0].lstrip("/")) if summary.get("Names") \
                else summary["Id"]
            started_at, restart_count, health = runtime.get(summary["Id"], (None, 0, None))
            observed.append(
                ObservedContainer(
                    name=name,
                    id=summary["Id"],
                    labels=self._overlay(summary["Id"], summary.get("Labels") or {}),
                    state=summary.get("State", "unknown"),
                    status=summary.get("Status", ""),
                    started_at=started_at,
                    restart_count=restart_count,
                    health=health,
                    image=summary.get("Image", ""),
                    aside=name.endswith((ASIDE_SUFFIX, NEXT_SUFFIX)),
                )
            )
        return sorted(observed, key=lambda c: c.name)

    def container_labels(self) -> list[dict[str, str]]:
        """The labels of each of this agent's containers, from one listing and no inspection
        (``list_containers`` inspects every container whose status text changed, which the
        uptime in it does every second): for decisions that need nothing else."""
        try:
            summaries = self.api.containers(all=True, filters=self._filters())
        except DockerException as e:
            raise NodeError(f"cannot list containers: {e}") from e
        return [self._overlay(s["Id"], s.get("Labels") or {}) for s in summaries]

    def container_names(self) -> frozenset[str]:
        """The plan's names of every container on the engine (any owner, any state), from one
        listing and no inspection."""
        try:
            summaries = self.api.containers(all=True)
        except DockerException as e:
            raise NodeError(f"cannot list containers: {e}") from e
        return frozenset(self.plan_name(n.lstrip("/")) for s in summaries
                         for n in s.get("Names") or [])

    def _runtime(self, summaries: list[dict[str, Any]]) -> dict[str, Runtime]:
        """Start time, restart count and health of each container, inspected only when its
        state or status text changed since the last listing (a restart or a health change
        always changes the status text), the inspections run side by side."""
        keys = {s["Id"]: (s.get("State", ""), s.get("Status", "")) for s in summaries}
        with self._runtime_lock:
            return self._runtime_locked(keys)

    def _runtime_locked(self, keys: dict[str, tuple[str, str]]) -> dict[str, Runtime]:
        stale = [ident for ident, key in keys.items()
                 if self._runtime_cache.get(ident, (None,))[0] != key]
        if stale:
            with ThreadPoolExecutor(max_workers=min(8, len(stale))) as pool:
                inspected = dict(zip(stale, pool.map(self._inspect, stale), strict=True))
            for ident, details in inspected.items():
                state = (details or {}).get("State", {})
                self._runtime_cache[ident] = (keys[ident], (
                    _parse_time(state.get("StartedAt")),
                    int((details or {}).get("RestartCount", 0)),
                    (state.get("Health") or {}).get("Status"),
                ))
        for ident in list(self._runtime_cache):
            if ident not in keys:
                del self._runtime_cache[ident]
        return {ident: self._runtime_cache[ident][1] for ident in keys}

    def _inspect(self, ident: str) -> dict[str, Any] | None:
        try:
            return self.api.inspect_container(ident)  # type: ignore[no-any-return]
        except NotFound:
            return None
        except DockerException as e:
            raise NodeError(f"cannot inspect container {ident}: {e}") from e

    def list_networks(self) -> list[ObservedNetwork]:
        try:
            networks = self.api.networks(filters=self._filters())
        except DockerException as e:
            raise NodeError(f"cannot list networks: {e}") from e
        out = []
        for network in networks:
            configs = (network.get("IPAM") or {}).get("Config") or [{}]
            out.append(
                ObservedNetwork(
                    name=self.plan_name(network["Name"]), id=network["Id"],
                    labels=network.get("Labels") or {},
                    subnet=configs[0].get("Subnet"),
                )
            )
        return sorted(out, key=lambda n: n.name)

    def find(self, name: str) -> ContainerDetails | None:
        """The container called ``name`` if SDP owns it; Conflict if someone else does."""
        if not _CONTAINER_NAME.fullmatch(name):
            # Names reach Docker's URL paths: only plain container names get that far.
            raise BadRequest(f"{name[:80]!r} is not a container name")
        raw = self._inspect(self.engine_name(name))
        if raw is None:
            return None
        details = ContainerDetails.from_inspect(raw)
        details = replace(details, name=self.plan_name(details.name))
        if self.is_own(dict(details.labels)):
            details = replace(details, labels=self._overlay(details.id, details.labels))
        if not self.is_own(dict(details.labels)):
            raise Conflict(
                f"a container named {name!r} already exists on node {self.config.name} and is "
                f"not this agent's ({self.describe_owner(dict(details.labels))}); SDP never "
                "touches it: rename or remove it, or rename the sandbox"
            )
        return details

    def port_user(self, port: int) -> PortHolder | None:
        """The container (any owner) publishing host ``port``, if any."""
        try:
            users = self.api.containers(all=False, filters={"publish": str(port)})
        except DockerException as e:
            raise NodeError(f"cannot list containers: {e}") from e
        for user in users:
            name = user["Names"][0].lstrip("/") if user.get("Names") else user["Id"][:12]
            return PortHolder(name, user.get("Labels") or {})
        return None

    def foreign_ports(self) -> set[int]:
        """The host ports that running containers of other owners publish (one listing)."""
        try:
            summaries = self.api.containers()
        except DockerException as e:
            raise NodeError(f"cannot list containers: {e}") from e
        return {
            int(binding["PublicPort"]) for summary in summaries
            if not self.is_own(summary.get("Labels"))
            for binding in summary.get("Ports") or [] if binding.get("PublicPort")
        }

    def bridge_subnet(self) -> str:
        """The IPv4 subnet of Docker's default bridge network (where gateways run)."""
        try:
            bridge = self.api.inspect_network("bridge")
        except DockerException as e:
            raise NodeError(f"cannot inspect Docker's default bridge network: {e}") from e
        for config in (bridge.get("IPAM") or {}).get("Config") or []:
            subnet = str(config.get("Subnet", ""))
            if subnet and ":" not in subnet:
                return subnet
        raise NodeError("Docker's default bridge network has no IPv4 subnet")

    def require_image(self, image: str) -> None:
        try:
            self.api.inspect_image(image)
        except ImageNotFound:
            raise ImageMissing(
                f"image {image!r} is not loaded on node {self.config.name}; SDP never pulls "
                f"images: on a machine with access, 'docker save {image} -o image.tar', copy "
                f"it to the node, then 'docker load -i image.tar'"
            ) from None
        except DockerException as e:
            raise NodeError(f"cannot inspect image {image!r}: {e}") from e

    def logs_tail(self, ident: str, lines: int = 30, *, stdout: bool = True) -> list[str]:
        """The container's last output lines; ``stdout=False``: its error output alone (where
        php:*-apache images send Apache's error log, apart from the access log on stdout)."""
        try:
            raw = self.api.logs(ident, stdout=stdout, stderr=True, tail=lines)
        except DockerException:
            return []
        return raw.decode("utf-8", "replace").splitlines()[-lines:]  # type: ignore[no-any-return]

    def stats(self, name: str) -> ContainerStats:
        details = self.find(name)
        if details is None:
            from sdp_node.errors import NotFound as Missing

            raise Missing(f"no container {name!r} of this node")
        raw = self.api.stats(details.id, stream=False)
        cpu = raw.get("cpu_stats", {})
        pre = raw.get("precpu_stats", {})
        delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get(
            "total_usage", 0
        )
        system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or 1
        memory = raw.get("memory_stats", {})
        return ContainerStats(
            name=name,
            cpu_percent=round(delta / system * cpus * 100, 2) if system > 0 else 0.0,
            memory_bytes=int(memory.get("usage", 0)),
            memory_limit_bytes=int(memory.get("limit", 0)),
        )

    # -- networks --------------------------------------------------------------------------------

    def ensure_network(self, name: str, labels: dict[str, str]) -> tuple[bool, str]:
        """Create the sandbox network if missing; (created, subnet)."""
        existing = self._network(name)
        if existing is not None:
            if not self.is_own(existing.get("Labels")):
                raise Conflict(
                    f"a network named {name!r} exists on node {self.config.name} and is not "
                    f"this agent's ({self.describe_owner(existing.get('Labels'))})"
                )
            configs = (existing.get("IPAM") or {}).get("Config") or [{}]
            return False, str(configs[0].get("Subnet", ""))
        for attempt in range(24):
            subnet = self._free_subnet(spread=attempt > 0)
            try:
                self.api.create_network(
                    self.engine_name(name), driver="bridge", labels=self.own_labels(**labels),
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet))]),
                    check_duplicate=True,
                )
                return True, str(subnet)
            except APIError as e:
                if "overlap" in str(e).lower() and attempt < 23:
                    continue  # another agent on this engine took it meanwhile
                if e.status_code == 409:
                    return self.ensure_network(name, labels)
                raise NodeError(f"cannot create network {name!r}: {e.explanation}") from e
        raise NodeError(f"cannot create network {name!r}: no free subnet")  # pragma: no cover

    def _network(self, name: str) -> dict[str, Any] | None:
        try:
            for network in self.api.networks(names=[self.engine_name(name)]):
                if network["Name"] == self.engine_name(name):
                    return self.api.inspect_network(network["Id"])  # type: ignore[no-any-return]
        except DockerException as e:
            raise NodeError(f"cannot inspect network {name!r}: {e}") from e
        return None

    def _free_subnet(
        self, *, spread: bool = False
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The first free subnet of the range; after a collision with another creator (two
        agents on one engine), one of the next free ones at random, so they stop colliding."""
        used = []
        for network in self.api.networks():
            details = network
            for config in (details.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError, KeyError):
                    used.append(ipaddress.ip_network(config["Subnet"]))
        span = ipaddress.ip_network(self.config.subnet_range)
        free = []
        for candidate in span.subnets(new_prefix=self.config.subnet_prefix):
            if not any(candidate.overlaps(u) for u in used):
                free.append(candidate)
                if len(free) == (16 if spread else 1):
                    break
        if free:
            return random.choice(free) if spread else free[0]
        raise NodeError(
            f"no free /{self.config.subnet_prefix} subnet left in {self.config.subnet_range} on "
            f"node {self.config.name}: widen subnet_range in node.yaml"
        )

    def remove_network(self, name: str) -> bool:
        existing = self._network(name)
        if existing is None:
            return False
        if not self.is_own(existing.get("Labels")):
            raise Conflict(f"network {name!r} is not this agent's; SDP never removes it")
        try:
            self.api.remove_network(existing["Id"])
        except NotFound:
            return False
        except APIError as e:
            raise NodeError(f"cannot remove network {name!r}: {e.explanation}") from e
        return True

    # -- containers ------------------------------------------------------------------------------

    def create(self, spec: RunSpec) -> str:
        # No image check first: a missing image is Docker's 404 below, explained there.
        host_ip = self.config.publish_address
        host_config = self.api.create_host_config(
            port_bindings={spec.container_port: (host_ip, spec.host_port)},
            binds={
                m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                for m in spec.mounts
            },
            nano_cpus=spec.nano_cpus,
            mem_limit=spec.memory_bytes,
            restart_policy={"Name": "unless-stopped"},
            extra_hosts={"host.docker.internal": "host-gateway"},
            network_mode=self.engine_name(spec.network) if spec.network else "bridge",
            init=spec.init or None,
            **_confinement(spec.confinement),
        )
        networking = None
        if spec.network:
            networking = self.api.create_networking_config(
                {self.engine_name(spec.network): self.api.create_endpoint_config(
                    aliases=[spec.alias] if spec.alias else None
                )}
            )
        try:
            created = self.api.create_container(
                spec.image,
                command=spec.command,
                name=self.engine_name(spec.name),
                environment=spec.env,
                labels=spec.labels,
                ports=[spec.container_port],
                host_config=host_config,
                networking_config=networking,
                detach=True,
            )
        except ImageNotFound:
            self.require_image(spec.image)
            raise
        except APIError as e:
            if e.status_code == 409:
                self.find(spec.name)  # raises Conflict when the name is foreign
            raise ContainerError(f"cannot create container {spec.name!r}: {e.explanation}") from e
        return str(created["Id"])

    def start(self, ident: str, *, name: str, port: int | None = None) -> None:
        try:
            self.api.start(ident)
        except APIError as e:
            text = str(e.explanation or e)
            if port is not None and ("port is already allocated" in text or "address already in use"
                                     in text):
                user = self.port_user(port)
                who = (
                    f"container {user.name!r} ({self.describe_owner(dict(user.labels))})" if user
                    else "a process outside Docker"
                )
                raise Conflict(
                    f"port {port} on node {self.config.name} is in use by {who}: SDP does not "
                    "touch it; free the port or give the service another one"
                ) from e
            raise ContainerError(f"cannot start container {name!r}: {text}") from e

    def stop(self, ident: str) -> None:
        try:
            self.api.stop(ident, timeout=STOP_TIMEOUT)
        except NotFound:
            return
        except APIError as e:
            raise ContainerError(f"cannot stop container {ident!r}: {e.explanation}") from e

    def join_alias(self, ident: str, network: str, alias: str) -> None:
        """Give the container ``alias`` on ``network`` (Docker sets aliases only when a
        container connects: it leaves the network and joins again with it; its published port
        comes back with it)."""
        try:
            self.api.disconnect_container_from_network(ident, self.engine_name(network))
            self.api.connect_container_to_network(ident, self.engine_name(network),
                                                  aliases=[alias])
        except APIError as e:
            raise ContainerError(
                f"cannot give container {ident[:12]} the alias {alias!r} on {network!r}: "
                f"{e.explanation}") from e

    def rename(self, ident: str, new_name: str) -> None:
        try:
            self.api.rename(ident, self.engine_name(new_name))
        except APIError as e:
            raise ContainerError(f"cannot rename container to {new_name!r}: {e.explanation}") from e

    def remove(self, ident: str) -> None:
        self._forget_overlay(ident)
        try:
            self.api.remove_container(ident, force=True, v=False)
        except NotFound:
            return
        except APIError as e:
            if e.status_code == 409 and "in progress" in str(e.explanation):
                return
            raise ContainerError(f"cannot remove container {ident!r}: {e.explanation}") from e

    def restart_count(self, ident: str) -> int:
        return int((self._inspect(ident) or {}).get("RestartCount", 0) or 0)

    def exec(self, ident: str, command: list[str], *, user: str = "") -> tuple[int, str]:
        """Exit code and output of ``command`` in the container, as ``user`` (default: the
        container's own)."""
        try:
            handle = self.api.exec_create(ident, command, stdout=True, stderr=True, user=user)
            output = self.api.exec_start(handle["Id"])
            code = self.api.exec_inspect(handle["Id"]).get("ExitCode")
        except APIError as e:
            raise ContainerError(f"cannot run {command[0]!r} in {ident!r}: {e.explanation}") from e
        return int(code if code is not None else -1), output.decode("utf-8", "replace")

    def probe(self, port: int, path: str, *, timeout: float = 2.0) -> tuple[bool, str]:
        """One GET of ``path`` on the published port: (healthy = 2xx, "HTTP 200" or why not)."""
        host = "127.0.0.1" if self.config.publish_address in ("0.0.0.0", "") else \
            self.config.publish_address
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as answer:
                return 200 <= answer.status < 300, f"HTTP {answer.status}"
        except urllib.error.HTTPError as e:
            return False, f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            return False, str(getattr(e, "reason", e)) or type(e).__name__

    def probe_all(self, targets: dict[str, tuple[int, str]]) -> dict[str, str]:
        """Container name -> probe result, for (port, health path) targets, side by side."""
        if not targets:
            return {}
        with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            results = pool.map(lambda t: self.probe(t[0], t[1], timeout=1.0), targets.values())
            return {name: "ok" if healthy else text
                    for name, (healthy, text) in zip(targets, results, strict=True)}

    def _require_alive(self, ident: str, *, name: str, path: str, answer: str,
                       restarts_before: int) -> None:
        """CrashedOnStart when the container is gone, exited or was restarted by Docker."""
        details = self._inspect(ident)
        state = (details or {}).get("State", {})
        restarts = int((details or {}).get("RestartCount", 0) or 0) - restarts_before
        if details is None or state.get("Status") in ("exited", "dead", "restarting") \
                or restarts > 0:
            code = state.get("ExitCode")
            how = f"exited with code {code}" if not restarts else \
                f"exited (code {code}) and was restarted {restarts} time(s)"
            raise CrashedOnStart(
                f"container {name!r} {how} before it was healthy on {path}", answer=answer)

    def wait_healthy(
        self, ident: str, *, name: str, port: int, path: str, timeout: float, log: Log,
        successes: int = 1, restarts_before: int = 0,
    ) -> str:
        """Poll ``path`` on the published port until it answered 2xx ``successes`` times in a
        row; the last answer. A container that exits, or that Docker restarts (its restart
        policy hides a crash), fails at once with ``CrashedOnStart``: nobody waits out the
        timeout for a process that is gone. Time running out is ``HealthCheckFailed``."""
        deadline = time.monotonic() + timeout
        # A process that was just started usually listens within tens of milliseconds: poll
        # often at first, then back off (to 0.5 s) for slow starts. Answers in a row are
        # counted as before, each one a new GET.
        delay = HEALTH_FIRST_DELAY
        last = "no answer yet"
        streak = 0
        while True:
            healthy, last = self.probe(port, path)
            streak = streak + 1 if healthy else 0
            if not healthy or streak >= successes:
                # Docker is asked after each unanswered probe (an exit fails at once) and at
                # the end of the streak (a restart during it fails too), not before every GET.
                self._require_alive(ident, name=name, path=path, answer=last,
                                    restarts_before=restarts_before)
            if streak >= successes:
                log(f"health check {path} answered {last.removeprefix('HTTP ')}"
                    + (f" {streak} times in a row" if successes > 1 else ""))
                return last
            if time.monotonic() >= deadline:
                raise HealthCheckFailed(
                    f"container {name!r} did not answer {path} on port {port} with 2xx"
                    + (f" {successes} times in a row" if successes > 1 else "")
                    + f" within {timeout:.0f}s (last: {last})", answer=last,
                )
            time.sleep(HEALTH_STREAK_DELAY if healthy else delay)
            if not healthy:
                delay = min(delay * 1.5, 0.5)
