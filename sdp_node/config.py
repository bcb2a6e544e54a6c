"""The agent's own configuration (``node.yaml``): what is local to its VM.

The node's name and type, the SDP installation it belongs to, where it listens, where its
bearer token comes from, its workspace, the address it publishes ports on, the subnet range of
sandbox networks, the reload command of gateways, and the repositories it serves; an INFRA
node's data servers and clone sources (``sdp_node.dataconfig``). Loaded once at
start; an invalid file is refused with ``file:line:col``-free but key-naming messages (the
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
from sdp_node.protocol import NodeType, RepositoryInfo, RepositoryKind


class ConfigError(NodeError):
    code = "config"


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Name = Annotated[str, AfterValidator(_name)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenSource(_Model):
    """Where the bearer token is read from: an environment variable or a file."""

    env: str | None = None
    file: Path | None = None

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
    proxy: str = Field(default="off", description="GOPROXY; 'off' on offline VMs")
    flags: str = Field(default="", description="GOFLAGS")
    module_cache: Path | None = Field(
        default=None, description="GOMODCACHE (default: <workspace>/gomodcache)"
    )
    build_timeout_seconds: float = 600


class RepositoryConfig(_Model):
    name: Name
    url: str = Field(description="remote URL (http or https); credentials never go here")
    kind: RepositoryKind
    build_target: str = "."
    container_port: int | None = None
    image: str | None = None
    command: list[str] | None = Field(
        default=None, description="container command (default: /src/app-<name> for go, the "
        "image's own for php)"
    )
    init: bool = Field(default=False, description="run an init process as PID 1 (docker --init)")
    health_path: str | None = None
    health_timeout_seconds: float = 60
    mount_target: str | None = Field(
        default=None, description="php: where the tree is mounted (default /var/www/html/<name>)"
    )
    url_prefix: str = Field(default="/erangel", description="php: URL prefix served")
    routes_file: str = "application/config/production/config.php"
    ignored_route_keys: list[str] = Field(
        default_factory=lambda: ["base"],
        description="php: <key>_url entries that are not service routes (CodeIgniter's base_url)",
    )
    composer: str = Field(default="composer", description="php: the composer command")
    composer_timeout_seconds: float = 120
    go: GoSettings = Field(default_factory=GoSettings)

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
    name: Name
    type: NodeType
    installation: Name
    resource_prefix: str = Field(
        default=DEFAULT_PREFIX,
        description="first part of every container and network name this node creates; must "
        "equal nodes.yaml's resource_prefix (two installations on one engine use different ones)",
    )
    listen: str = Field(default="127.0.0.1:3453", description="host:port to listen on")
    token: TokenSource
    workspace: Path
    publish_address: str = Field(
        default="0.0.0.0", description="address published ports bind to"
    )
    subnet_range: str = Field(
        default="10.231.0.0/16", description="sandbox networks get /27 subnets from here"
    )
    subnet_prefix: int = Field(default=27, ge=16, le=29)
    reload_command: list[str] = Field(
        default_factory=lambda: ["apache2ctl", "graceful"],
        description="run inside a gateway container after a route change ([] = none)",
    )
    repositories: list[RepositoryConfig] = Field(default_factory=list)
    max_events_per_operation: int = 20000
    go_cache: Path | None = Field(
        default=None, description="GOCACHE shared by all builds (default <workspace>/gocache)"
    )
    data: DataServers | None = Field(
        default=None, description="INFRA nodes: the data servers managed here (docs/infra.md)"
    )

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
        if not host or not port.isdigit():
            raise ValueError(f"listen {self.listen!r} must be host:port")
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
