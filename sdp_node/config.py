"""The agent's own configuration (``node.yaml``): what is local to its VM.

The node's name and type, the SDP installation it belongs to, where it listens, where its
bearer token comes from, its workspace, the address it publishes ports on, the subnet range of
sandbox networks, the reload command of gateways, how containers are hardened, which sources may
reach the sandboxes' published ports, the repositories it serves, and an INFRA node's data
servers and clone sources (``sdp_node.dataconfig``). These are the node's own trust decisions:
nothing in the state repository can change them. Loaded once at start; an invalid file is
refused with ``file:line:col``-free but key-naming messages (the
reconciler's positioned loader is for the state directory, which people edit far more often).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from sdp_node.dataconfig import DataServers
from sdp_node.errors import NodeError
from sdp_node.naming import DEFAULT_PREFIX, ResourceNames, name_problem, prefix_problem
from sdp_node.numbers import port_number
from sdp_node.pool import default_workers
from sdp_node.protocol import NodeType, RepositoryInfo, RepositoryKind


class ConfigError(NodeError):
    code = "config"


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Name = Annotated[str, AfterValidator(_name)]


def _apache_module(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", value):
        raise ValueError(
            f"apache module {value!r} must be a name as in mods-available/ (e.g. rewrite, headers)"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenSource(_Model):
    """Where the bearer token is read from: an environment variable or a file (exactly one).
    The token is at least 16 characters; it is never given on the command line."""

    env: str | None = Field(default=None, description="name of the environment variable "
                            "holding the token (e.g. set by the systemd unit's EnvironmentFile)")
    file: Path | None = Field(default=None, description="file holding the token (surrounding "
                              "whitespace is dropped); readable by the agent only")

    @model_validator(mode="after")
    def _one(self) -> TokenSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("token: give exactly one of 'env: VARIABLE' or 'file: PATH'")
        return self

    def read(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env, "")
            where = f"environment variable {self.env}"
        else:
            assert self.file is not None
            try:
                value = self.file.expanduser().read_text().strip()
            except OSError as e:
                raise ConfigError(f"cannot read the token file {self.file}: {e.strerror}") from e
            where = f"file {self.file}"
        if len(value) < 16:
            raise ConfigError(f"the agent token from {where} is missing or shorter than 16 chars")
        return value


class GoSettings(_Model):
    """How a Go repository is built (``go build`` runs on the node, offline by default)."""

    proxy: str = Field(default="off", description="GOPROXY; 'off' on offline VMs")
    flags: str = Field(default="", description="GOFLAGS")
    module_cache: Path | None = Field(
        default=None, description="GOMODCACHE (default: <workspace>/gomodcache)"
    )
    build_timeout_seconds: float = Field(default=600, gt=0,
                                         description="a build running longer fails")


_CAPABILITY = re.compile(r"[A-Z][A-Z0-9_]{1,40}")
PHP_CAPABILITIES = ("SETUID", "SETGID", "KILL")
"""What Apache + mod_php needs after ``--cap-drop ALL`` (measured, docs/node.md): SETUID and
SETGID so its children become www-data instead of staying root, KILL so a graceful reload can
replace those children. Binding port 80 needs nothing: Docker (20.10+) sets
``net.ipv4.ip_unprivileged_port_start=0`` in the container."""


def _capability(value: str) -> str:
    name = value.upper().removeprefix("CAP_")
    if not _CAPABILITY.fullmatch(name):
        raise ValueError(f"{value!r} is not a capability name (like NET_BIND_SERVICE)")
    return name


Capability = Annotated[str, AfterValidator(_capability)]


class Hardening(_Model):
    """How every container of this node is confined; each setting can be turned off."""

    pids_limit: int | None = Field(
        default=512, ge=16, description="at most this many processes/threads (None = no limit)"
    )
    no_new_privileges: bool = Field(
        default=True, description="setuid binaries cannot raise privileges (no-new-privileges)"
    )
    drop_capabilities: bool = Field(
        default=True, description="--cap-drop ALL, then add back the repository's capabilities"
    )
    read_only_trees: bool = Field(
        default=True, description="mount service and gateway trees read-only (the agent edits "
        "config.php from the host side)"
    )
    cpu_millicores: int | None = Field(
        default=1000, ge=1, description="CPU limit when the plan sets none (None = unlimited)"
    )
    memory_bytes: int | None = Field(
        default=512 * 1024 * 1024, ge=4 * 1024 * 1024,
        description="memory limit when the plan sets none (None = unlimited)",
    )
    composer_user: str | None = Field(
        default="nobody", description="the unprivileged user composer runs as when the agent "
        "is root (None = the agent's own user)",
    )


DOCKER_BRIDGE = "docker-bridge"
"""In ``isolation.allow_from``: the subnet of Docker's default bridge network, where gateway
containers run (they use ``network_mode: bridge``); on one machine that is where gateways
come from."""


class Pruning(_Model):
    """What the agent deletes from its workspace after each apply (``sdp_node.prune``)."""

    enabled: bool = Field(default=True, description="prune after each apply; false keeps "
                          "every commit tree, build and gateway tree and lets GOCACHE grow")
    keep_recent: int = Field(
        default=3, ge=0,
        description="per repository: how many commit trees and builds that no container uses "
        "are kept, most recently made first (a rollback to one of them checks out and builds "
        "nothing); what a container mounts is always kept")
    min_age_minutes: float = Field(
        default=10, ge=0,
        description="nothing made or changed less than this long ago is deleted")
    go_cache_max_mb: int = Field(
        default=2048, ge=0,
        description="GOCACHE is emptied after an apply that leaves it larger than this many "
        "MiB (Go rebuilds what it needs; its module cache is not touched)")


class Isolation(_Model):
    """Which sources may reach the sandboxes' published ports (MICRO nodes)."""

    enabled: bool = Field(
        default=True, description="guard the published ports of this node's services with "
        "iptables rules the agent owns (MICRO nodes only)",
    )
    allow_from: list[str] = Field(
        default_factory=lambda: [DOCKER_BRIDGE],
        description="gateway source addresses or CIDRs (across VMs: the gateway VM's address), "
        f"or {DOCKER_BRIDGE!r}; the host itself (loopback) is always allowed",
    )
    iptables: str = Field(
        default="iptables", description="the iptables command Docker uses (iptables, "
        "iptables-nft or iptables-legacy); '<command>-restore' must exist beside it",
    )

    @model_validator(mode="after")
    def _check(self) -> Isolation:
        for source in self.allow_from:
            if source == DOCKER_BRIDGE:
                continue
            try:
                network = ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ValueError(
                    f"isolation.allow_from: {source!r} is neither an IPv4 address or CIDR nor "
                    f"{DOCKER_BRIDGE!r}"
                ) from None
            if network.version != 4:
                raise ValueError(f"isolation.allow_from: {source!r}: only IPv4 is guarded")
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", self.iptables):
            raise ValueError(f"isolation.iptables: {self.iptables!r} is not a command name")
        return self


class RepositoryConfig(_Model):
    """One repository the node serves: a Go service (MICRO) or the PHP gateway (GATEWAY)."""

    name: Name = Field(description="the service name sandboxes use (for the gateway, the "
                       "repository name sandboxes' gateway.repository names)")
    url: str = Field(description="remote URL (http or https); credentials never go here")
    kind: RepositoryKind = Field(description="go: built with go build and run from /src; "
                                 "php: the gateway, served by Apache from its tree")
    build_target: str = Field(default=".", description="go: the package go build builds")
    container_port: int | None = Field(default=None, ge=1, le=65535, description="the port "
                                       "the container listens on (default 8080 for go, 80 "
                                       "for php)")
    image: str | None = Field(default=None, description="the runtime image, preloaded with "
                              "docker load (never pulled; default alpine:3.20 for go, "
                              "php:8.3-apache for php)")
    command: list[str] | None = Field(
        default=None, description="container command (default: /sdp/app-<name>, the binary SDP "
        "built, for go; the image's own for php)"
    )
    capabilities: list[Capability] | None = Field(
        default=None, description="capabilities added back after --cap-drop ALL (default: none "
        f"for go, {', '.join(PHP_CAPABILITIES)} for php)",
    )
    init: bool = Field(default=False, description="run an init process as PID 1 (docker --init)")
    health_path: str | None = Field(default=None, description="the path a deploy waits for "
                                    "(HTTP 2xx) and observe probes (default /healthz for go, "
                                    "<url_prefix>/ for php)")
    health_timeout_seconds: float = Field(default=60, gt=0, description="how long a deploy "
                                          "waits for the health path before it fails")
    health_successes: int = Field(default=2, ge=1, le=100, description="healthy = the health "
                                  "path answered 2xx this many times in a row within the "
                                  "timeout")
    drain_seconds: float = Field(default=1, ge=0, le=600, description="after a switch, how "
                                 "long the previous container keeps serving requests already "
                                 "sent to it before it is stopped")
    mount_target: str | None = Field(
        default=None, description="php: where the tree is mounted (default /var/www/html/<name>)"
    )
    url_prefix: str = Field(default="/erangel", description="php: URL prefix served")
    routes_file: str = Field(default="application/config/production/config.php",
                             description="php: the config whose <service>_url entries are "
                             "the routes (relative to the tree)")
    ignored_route_keys: list[str] = Field(
        default_factory=lambda: ["base"],
        description="php: <key>_url entries that are not service routes (CodeIgniter's base_url)",
    )
    apache_modules: list[Annotated[str, AfterValidator(_apache_module)]] = Field(
        default_factory=lambda: ["rewrite"],
        description="php: Apache modules the tree needs (its .htaccess: RewriteEngine needs "
        "rewrite), loaded from the image's /etc/apache2/mods-available/<name>.load unless the "
        "image already loads them; a stock php:8.3-apache enables no mod_rewrite",
    )
    composer: str = Field(default="composer", description="php: the composer command")
    composer_timeout_seconds: float = Field(default=120, gt=0, description="php: composer "
                                            "install is abandoned (and skipped) after this")
    go: GoSettings = Field(default_factory=GoSettings, description="go: build settings")

    @model_validator(mode="after")
    def _check(self) -> RepositoryConfig:
        if not re.fullmatch(r"https?://\S+", self.url) or "@" in self.url.split("/")[2]:
            raise ValueError(
                f"repository {self.name}: url {self.url!r} must be http(s) without credentials"
            )
        if not self.url_prefix.startswith("/") or self.url_prefix.endswith("/"):
            raise ValueError(f"repository {self.name}: url_prefix is like '/erangel'")
        return self

    @property
    def effective_capabilities(self) -> list[str]:
        if self.capabilities is not None:
            return list(self.capabilities)
        return [] if self.kind is RepositoryKind.GO else list(PHP_CAPABILITIES)

    @property
    def effective_image(self) -> str:
        return self.image or ("alpine:3.20" if self.kind is RepositoryKind.GO else "php:8.3-apache")

    @property
    def effective_port(self) -> int:
        return self.container_port or (8080 if self.kind is RepositoryKind.GO else 80)

    @property
    def effective_health_path(self) -> str:
        if self.health_path:
            return self.health_path
        return "/healthz" if self.kind is RepositoryKind.GO else f"{self.url_prefix}/"

    @property
    def effective_mount_target(self) -> str:
        return self.mount_target or f"/var/www/html/{self.name}"

    def info(self) -> RepositoryInfo:
        return RepositoryInfo(
            name=self.name,
            kind=self.kind,
            image=self.effective_image,
            container_port=self.effective_port,
            health_path=self.effective_health_path,
            url_prefix=self.url_prefix if self.kind is RepositoryKind.PHP else None,
            routes_file=self.routes_file if self.kind is RepositoryKind.PHP else None,
        )


class NodeConfig(_Model):
    """``node.yaml``: what is local to one VM. A relative ``workspace`` is relative to the
    file; other paths are best absolute (a systemd service runs in /)."""

    name: Name = Field(description="the node's name, as in the state's nodes.yaml (stamped "
                       "as sdp.node on everything it creates)")
    type: NodeType = Field(description="MICRO (Go services) or GATEWAY (the PHP gateway); as "
                           "in nodes.yaml")
    installation: Name = Field(description="the SDP installation it belongs to, as in "
                               "nodes.yaml (stamped as sdp.instance); it touches nothing else")
    resource_prefix: str = Field(
        default=DEFAULT_PREFIX,
        description="first part of every container and network name this node creates; must "
        "equal nodes.yaml's resource_prefix (two installations on one engine use different ones)",
    )
    listen: str = Field(default="127.0.0.1:3453", description="host:port to listen on")
    token: TokenSource = Field(description="where the bearer token comes from; the same "
                               "token as nodes.yaml's agent_token of this node")
    workspace: Path = Field(description="object stores, commit trees, builds, gateway trees, "
                            "last applied specs; created if missing")
    publish_address: str = Field(
        default="0.0.0.0", description="address published ports bind to"
    )
    subnet_range: str = Field(
        default="10.231.0.0/16", description="sandbox networks get /27 subnets from here"
    )
    shared_engine: bool = Field(
        default=False, description="several agents share this Docker engine (tests, a demo on "
        "one machine): the engine's names of this agent's containers and networks end in "
        "'.NODE', so a sandbox can run on two of them at once while it moves between nodes")
    subnet_prefix: int = Field(default=27, ge=16, le=29,
                               description="the prefix length of each sandbox network")
    reload_command: list[str] = Field(
        default_factory=lambda: ["apache2ctl", "graceful"],
        description="run inside a gateway container after a route change ([] = none)",
    )
    repositories: list[RepositoryConfig] = Field(default_factory=list,
                                                 description="the repositories it serves")
    max_events_per_operation: int = Field(default=20000, ge=100, description="events kept "
                                          "per operation for replay (older ones are dropped)")
    go_cache: Path | None = Field(
        default=None, description="GOCACHE shared by all builds (default <workspace>/gocache)"
    )
    apply_workers: int | None = Field(
        default=None, ge=1, le=32,
        description="how many steps of one plan run side by side: deploys of different "
        "sandboxes overlap, the ordering rules of docs/node.md still hold (default: min(4, "
        "2 x CPUs); 1 = one step after another)")
    metrics_interval_seconds: float = Field(
        default=10.0, ge=0.2, le=3600, description="how often the background sampler reads "
        "each container's CPU, memory, restarts and health path (never inside observe)")
    metrics_samples: int = Field(
        default=60, ge=2, le=10000,
        description="samples kept per container (a ring buffer: 60 x 10 s = the last 10 minutes)")
    hardening: Hardening = Field(
        default_factory=Hardening,
        description="how every container is confined by default (pids, privileges, "
        "capabilities, read-only trees, default CPU and memory, the composer user)")
    pruning: Pruning = Field(
        default_factory=Pruning,
        description="disk hygiene: unused commit trees, builds and gateway trees are deleted "
        "and GOCACHE is bounded, after each apply")
    isolation: Isolation = Field(
        default_factory=Isolation,
        description="MICRO: which sources may reach the sandboxes' published ports (iptables "
        "rules this agent owns); nothing else, no other sandbox's container")
    data: DataServers | None = Field(
        default=None, description="INFRA nodes: the data servers managed here (docs/infra.md)"
    )

    @property
    def workers(self) -> int:
        """``apply_workers``, or its default for this machine."""
        return self.apply_workers or default_workers()

    @model_validator(mode="after")
    def _check(self) -> NodeConfig:
        if self.type is NodeType.INFRA:
            if self.data is None or not any(
                (self.data.postgresql, self.data.redis, self.data.rabbitmq)
            ):
                raise ValueError("an INFRA node names at least one server under 'data:' "
                                 "(postgresql, redis, rabbitmq; see docs/infra.md)")
            if self.repositories:
                raise ValueError("an INFRA node serves no repositories; remove 'repositories:'")
        elif self.data is not None:
            raise ValueError(f"'data:' is for INFRA nodes; this node is {self.type.value}")
        names = [r.name for r in self.repositories]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"repositories defined twice: {', '.join(duplicates)}")
        try:
            network = ipaddress.ip_network(self.subnet_range)
        except ValueError as e:
            raise ValueError(f"subnet_range {self.subnet_range!r}: {e}") from None
        if network.prefixlen > self.subnet_prefix:
            raise ValueError(
                f"subnet_range {self.subnet_range} is smaller than one /{self.subnet_prefix}"
            )
        problem = prefix_problem(self.resource_prefix)
        if problem:
            raise ValueError(problem)
        host, _, port = self.listen.rpartition(":")
        if not host or port_number(port) is None:
            raise ValueError(f"listen {self.listen!r} must be host:port (a port up to 65535)")
        return self

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(self.resource_prefix)

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def repository(self, name: str) -> RepositoryConfig:
        for repository in self.repositories:
            if repository.name == name:
                return repository
        from sdp_node.errors import NotFound

        known = ", ".join(r.name for r in self.repositories) or "none"
        raise NotFound(f"node {self.name} serves no repository {name!r} (it serves: {known})")


def load_config(path: Path) -> NodeConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    try:
        data: Any = YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    base = path.parent
    if isinstance(data.get("workspace"), str):
        data["workspace"] = str((base / Path(data["workspace"]).expanduser()).resolve())
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as e:
        lines = [
            f"{path}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in e.errors(include_url=False)
        ]
        raise ConfigError("\n".join(lines)) from None
