"""Desired-state models: what each file of the state directory may say.

Pure data (pydantic v2, frozen, unknown keys forbidden). Field-level rules live here; rules that
need the whole state (references between files, port ranges, name collisions) live in
``rules.py``. Validator messages are written for the person editing the YAML: they name the
value and say what to write instead (the loader prefixes the file, line, column and key path).
The JSON Schemas in ``schemas/`` are generated from these classes (``sdp-reconcile schemas``).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from sdp_node.naming import (
    DEFAULT_PREFIX,
    ResourceNames,
    branch_problem,
    commit_problem,
    container_path_problem,
    name_problem,
    prefix_problem,
)
from sdp_node.protocol import DataKind
from sdp_node.protocol import NodeType as NodeType  # defined once, by the wire contract
from sdp_reconciler.state.servicevars import DEFAULT_VARIABLE as DEFAULT_URL_VARIABLE
from sdp_reconciler.state.servicevars import pattern_problem as url_variable_problem

SCHEMA_BASE = "https://sdp.invalid/schemas"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


# --- scalar types -------------------------------------------------------------------------------


def _check_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_branch(value: str) -> str:
    problem = branch_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_commit(value: str) -> str:
    problem = commit_problem(value)
    if problem:
        raise ValueError(problem)
    return value


_CPU = re.compile(r"(?P<n>\d+(?:\.\d{1,3})?)(?P<m>m?)")
_MEMORY = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|K|M|G|KB|MB|GB|B)?")
_MEMORY_UNITS = {
    None: 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3,
    "GB": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3,
}
_DURATION = re.compile(r"(?P<n>\d+)(?P<unit>[smhdw])")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_URL = re.compile(
    r"(?P<scheme>https?)://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>\d{1,5}))?(?P<path>/[A-Za-z0-9._~/%-]*)?"
)


def cpu_millicores(value: str) -> int:
    """``"500m"`` -> 500, ``"1"`` -> 1000, ``"1.5"`` -> 1500."""
    match = _CPU.fullmatch(value)
    if not match:
        raise ValueError(f"CPU {value!r} is not a quantity like '500m' or '1' or '1.5'")
    number = float(match["n"])
    return int(number) if match["m"] else round(number * 1000)


def memory_bytes(value: str) -> int:
    """``"512Mi"`` -> 536870912, ``"1GB"`` -> 1000000000, ``"64M"`` -> 64000000."""
    match = _MEMORY.fullmatch(value)
    if not match:
        raise ValueError(
            f"memory {value!r} is not a quantity like '512Mi', '1Gi', '512MB' or '1GB'"
        )
    return int(float(match["n"]) * _MEMORY_UNITS[match["unit"]])


def duration_seconds(value: str) -> int:
    match = _DURATION.fullmatch(value)
    if not match:
        raise ValueError(f"duration {value!r} is not like '30m', '12h', '14d' or '2w'")
    return int(match["n"]) * _DURATION_SECONDS[match["unit"]]


def _check_cpu(value: str | int | float) -> str:
    text = str(value)
    if cpu_millicores(text) <= 0:
        raise ValueError(f"CPU {text!r} must be more than zero")
    return text


def _check_memory(value: str | int) -> str:
    text = str(value)
    if memory_bytes(text) < 6 * 1024 * 1024:
        raise ValueError(f"memory {text!r} is below Docker's minimum of 6Mi")
    return text


def _check_duration(value: str) -> str:
    if duration_seconds(value) <= 0:
        raise ValueError(f"duration {value!r} must be more than zero")
    return value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid environment variable name: use letters, digits and '_', "
            "not starting with a digit"
        )
    return value


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an allowed http(s) URL (no query, fragment or credentials), or None."""
    match = _URL.fullmatch(value)
    if not match or len(value) > 2048:
        return (
            f"{value!r} is not an http(s) URL like 'https://payment-dev.company.invalid' "
            "(scheme http or https, a host, optional :port and path; no credentials, query or "
            "fragment)"
        )
    if match["port"] and not 1 <= int(match["port"]) <= 65535:
        return f"{value!r} has port {match['port']}, outside 1-65535"
    return None


def _check_url(value: str) -> str:
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_agent_url(value: str) -> str:
    if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(?::\d{1,5})?/?", value):
        raise ValueError(
            f"agent URL {value!r} must be like 'http://127.0.0.1:3453' (scheme, host, port; "
            "no path)"
        )
    return value.rstrip("/")


def _check_prefix(value: str) -> str:
    problem = prefix_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_host(value: str) -> str:
    if not _HOST.fullmatch(value):
        raise ValueError(f"{value!r} is not a host name or IPv4 address")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
AgentUrl = Annotated[str, AfterValidator(_check_agent_url)]
Branch = Annotated[str, AfterValidator(_check_branch)]
Commit = Annotated[str, AfterValidator(_check_commit)]
def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# ``cpu: 2`` and ``memory: 1073741824`` are natural YAML; they are read as text.
Cpu = Annotated[
    str, BeforeValidator(_number_as_text), AfterValidator(_check_cpu),
    WithJsonSchema({"type": ["string", "number"], "description": "'500m', '1' or 1.5"}),
]
Memory = Annotated[
    str, BeforeValidator(_number_as_text), AfterValidator(_check_memory),
    WithJsonSchema({"type": ["string", "integer"], "description": "'512Mi', '1GB' or bytes"}),
]
Duration = Annotated[str, AfterValidator(_check_duration)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
HttpUrl = Annotated[str, AfterValidator(_check_url)]
Host = Annotated[str, AfterValidator(_check_host)]
def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is outside 1-65535")
    return value


Port = Annotated[int, AfterValidator(_check_port), Field(json_schema_extra={"minimum": 1,
                                                                           "maximum": 65535})]


# --- secrets ------------------------------------------------------------------------------------


class SecretRef(Frozen):
    """Where a secret's value is found on the reconciler's host; never the value itself."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["env"]}, {"required": ["file"]}]}
    )

    env: EnvName | None = Field(default=None, description="an environment variable name")
    file: str | None = Field(
        default=None,
        description="a file path (absolute, or relative to the state directory; '~' expands)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError(
                "a secret reference names exactly one of 'env: VARIABLE' or 'file: PATH'"
            )
        if self.file is not None and not self.file.strip():
            raise ValueError("a secret file path cannot be empty")
        return self

    def describe(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


# --- nodes.yaml ---------------------------------------------------------------------------------


DEFAULT_PORT_RANGES: dict[NodeType, tuple[int, int]] = {
    NodeType.GATEWAY: (8080, 8179),
    NodeType.MICRO: (9001, 9999),
    NodeType.INFRA: (10001, 10999),
}


class PortRange(Frozen):
    first: Port
    last: Port

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.first > self.last:
            raise ValueError(f"port range {self.first}-{self.last} is empty: first > last")
        return self

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last


class NodeCapacity(Frozen):
    """What a node can run; placement fills the node with the most room left first."""

    cpu: Cpu | None = Field(default=None, description="CPU for sandbox containers: '8' or "
                            "'7500m'; a service's share is its resources.cpu")
    memory: Memory | None = Field(default=None, description="memory for sandbox containers: "
                                  "'16Gi'; a service's share is its resources.memory")
    containers: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="at most this many sandbox service containers")


class Node(Frozen):
    """A VM running an ``sdp-node`` agent."""

    name: Name
    type: NodeType
    agent_url: AgentUrl | None = Field(
        default=None,
        description="optional: where the agent listens, for readers; it must equal the URL "
        "pinned for this node on the reconciler host (reconciler.yaml), which is what is used",
    )
    agent_token: SecretRef | None = Field(
        default=None,
        description="no longer allowed here: agent tokens are pinned on the reconciler host "
        "(reconciler.yaml agents.<node>.token)",
    )
    address: Host = Field(
        description="what gateways use to reach ports published on this node"
    )
    public_address: Host = Field(
        description="what people and mobile apps use to reach this node"
    )
    ports: PortRange | None = Field(
        default=None,
        description="ports SDP may allocate here (default 8080-8179 for GATEWAY, "
        "9001-9999 for MICRO)",
    )
    capacity: NodeCapacity | None = Field(
        default=None,
        description="MICRO nodes: what new services may fill (without it, services spread "
        "by container count alone)",
    )
    cordoned: bool = Field(
        default=False,
        description="place nothing new here; what runs here stays (see 'sdp-reconcile drain')",
    )
    drained: bool = Field(
        default=False,
        description="MICRO nodes: run nothing here; what runs here moves to other nodes "
        "through the health-gated switch (written by 'sdp-reconcile drain NODE')",
    )

    @model_validator(mode="after")
    def _drained_micro(self) -> Node:
        if self.drained and self.type is not NodeType.MICRO:
            raise ValueError(f"drained: only a MICRO node can be drained (node {self.name} is "
                             f"{self.type.value}); cordon it instead")
        return self

    @property
    def accepts_new(self) -> bool:
        """Whether placement may put a service here that does not run here yet."""
        return not (self.cordoned or self.drained)

    def port_range(self) -> PortRange:
        if self.ports is not None:
            return self.ports
        first, last = DEFAULT_PORT_RANGES[self.type]
        return PortRange(first=first, last=last)


class HealthRules(Frozen):
    """When a running container counts as Degraded or Unhealthy (from the agents' samples)."""

    memory_percent: float = Field(
        default=90, gt=0, le=100,
        description="Degraded at or above this share of the container's memory limit")
    cpu_percent: float | None = Field(
        default=None, gt=0,
        description="Degraded at or above this CPU use (100 = one core); default: not judged")
    failing_checks: int = Field(
        default=3, ge=1,
        description="Unhealthy after this many failed health checks in a row (fewer: Degraded)")
    restarts_per_hour: int = Field(
        default=3, ge=1,
        description="Unhealthy (crash loop) at this many restarts in the last hour (fewer: "
        "Degraded)")


def _check_url_variable(value: str) -> str:
    problem = url_variable_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class NodesFile(Frozen):
    """``state/nodes.yaml``: this SDP installation and its nodes."""

    model_config = ConfigDict(
        json_schema_extra={"$id": f"{SCHEMA_BASE}/nodes.schema.json"}, title="SDP nodes"
    )
    installation: Name = Field(
        description="this SDP installation's name; stamped on every object it creates"
    )
    resource_prefix: Annotated[str, AfterValidator(_check_prefix)] = Field(
        default=DEFAULT_PREFIX,
        description="first part of every container and network name (sandbox-qa-x-account); "
        "two installations sharing one Docker engine need different prefixes",
    )
    spec_hash_key: SecretRef | None = Field(
        default=None,
        description="no longer allowed here: the spec-hash key is pinned on the reconciler "
        "host (reconciler.yaml spec_hash_key)",
    )
    service_url_variable: Annotated[str, AfterValidator(_check_url_variable)] | None = Field(
        default=DEFAULT_URL_VARIABLE,
        description="the name of the variable each container of a sandbox gets for every "
        "service its gateway routes, {SERVICE} standing for the service's name in capitals "
        "('-' as '_'): PAYMENT_URL; null: no such variables",
    )
    health: HealthRules = Field(
        default_factory=HealthRules,
        description="thresholds that decide Healthy / Degraded / Unhealthy (docs/operations.md)",
    )
    nodes: list[Node] = Field(min_length=1)

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(self.resource_prefix)


# --- sandboxes and templates --------------------------------------------------------------------


class Resources(Frozen):
    """Docker CPU and memory limits."""

    cpu: Cpu | None = Field(default=None, description="'500m' (millicores) or '1' (cores)")
    memory: Memory | None = Field(default=None, description="'512Mi', '1Gi', '512MB' or '1GB'")


class Lifecycle(Frozen):
    suspended: bool = Field(
        default=False, description="stop the sandbox's containers, keep its configuration"
    )
    expire_after: Duration | None = Field(
        default=None, description="inactivity after which the sandbox is suspended, e.g. 14d"
    )
    warn_before: Duration | None = Field(
        default=None,
        description="announce SANDBOX_EXPIRING this long before expire_after runs out, once "
        "per expiry, e.g. 1d",
    )
    retention: Duration | None = Field(
        default=None, description="how long an expired sandbox is kept before removal"
    )


class ServiceSpec(Frozen):
    """One service of a sandbox: a branch built and run in the sandbox, OCP, or a fixed URL."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["branch"]}, {"required": ["use_ocp"]}, {"required": ["target"]}
            ]
        }
    )

    branch: Branch | None = None
    commit: Commit | None = Field(default=None, description="pin the branch to this commit")
    use_ocp: Literal[True] | None = Field(
        default=None, description="route this service to the value the gateway's commit has"
    )
    target: HttpUrl | None = Field(default=None, description="route this service to this URL")
    port: Port | None = None
    node: Name | None = Field(default=None, description="run on this MICRO node")
    environment: Name | None = Field(
        default=None, description="environment for this service (default: the sandbox's)"
    )
    resources: Resources | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ServiceSpec:
        kinds = [k for k in ("branch", "use_ocp", "target") if getattr(self, k) is not None]
        if len(kinds) != 1:
            given = ", ".join(kinds) if kinds else "none of them"
            raise ValueError(
                "a service is exactly one of 'branch: NAME' (deploy it in the sandbox), "
                f"'use_ocp: true' or 'target: URL'; this one has {given}"
            )
        if self.branch is None:
            extra = [
                k for k in ("commit", "port", "node", "environment", "resources")
                if getattr(self, k) is not None
            ]
            if extra:
                verb = "applies" if len(extra) == 1 else "apply"
                raise ValueError(
                    f"{', '.join(extra)} {verb} only to a service deployed from a branch; "
                    f"this one is {kinds[0]}"
                )
        return self

    @property
    def deployed(self) -> bool:
        return self.branch is not None


class GatewaySpec(Frozen):
    branch: Branch | None = None
    commit: Commit | None = Field(default=None, description="pin the branch to this commit")
    port: Port | None = Field(default=None, description="the port mobile apps point at")
    node: Name | None = Field(default=None, description="run on this GATEWAY node")
    repository: Name | None = Field(
        default=None, description="the gateway repository (default: the node's only PHP one)"
    )
    environment: Name | None = None
    resources: Resources | None = None


# --- data services of a sandbox (docs/infra.md) -------------------------------------------------
#
#     data:
#       db: {postgresql: {from: qa-snapshot}}        # a clone of an INFRA node's source
#       cache: {redis: {}}                            # an ACL user confined to its key prefix
#       queue: {rabbitmq: {env: {vhost: AMQP_VHOST}}} # a vhost and its user; one name renamed
#
# Each entry is exactly one kind. Its containers get ``<NAME>_<SETTING>`` variables (``NAME``
# the entry's name upper-cased with ``-`` as ``_``): ``DB_HOST``, ``DB_PORT``, ``DB_NAME``,
# ``DB_USER``, ``DB_PASSWORD`` for PostgreSQL; ``_HOST``, ``_PORT``, ``_USER``, ``_PASSWORD``,
# ``_PREFIX`` (the key prefix) for Redis; ``_HOST``, ``_PORT``, ``_VHOST``, ``_USER``,
# ``_PASSWORD`` for RabbitMQ. ``env:`` renames any of them.


class DataSetting(StrEnum):
    """What a container is told about its data service; ``<NAME>_<SETTING>`` by default."""

    HOST = "host"
    PORT = "port"
    NAME = "name"
    VHOST = "vhost"
    USER = "user"
    PASSWORD = "password"  # noqa: S105 - a setting name
    PREFIX = "prefix"


SETTINGS: dict[DataKind, tuple[DataSetting, ...]] = {
    DataKind.POSTGRESQL: (DataSetting.HOST, DataSetting.PORT, DataSetting.NAME,
                          DataSetting.USER, DataSetting.PASSWORD),
    DataKind.REDIS: (DataSetting.HOST, DataSetting.PORT, DataSetting.USER,
                     DataSetting.PASSWORD, DataSetting.PREFIX),
    DataKind.RABBITMQ: (DataSetting.HOST, DataSetting.PORT, DataSetting.VHOST,
                        DataSetting.USER, DataSetting.PASSWORD),
}
_ENV_START = re.compile(r"[A-Za-z_]")


def _check_entry_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    if not _ENV_START.match(value):
        raise ValueError(
            f"data entry {value!r} must start with a letter: its variables are named "
            f"{value.upper()}_HOST and so on"
        )
    return value


DataName = Annotated[str, AfterValidator(_check_entry_name)]


class PostgresEnv(Frozen):
    """Variable names for a PostgreSQL entry (default ``<NAME>_HOST`` ...)."""

    host: EnvName | None = None
    port: EnvName | None = None
    name: EnvName | None = None
    user: EnvName | None = None
    password: EnvName | None = None


class RedisEnv(Frozen):
    host: EnvName | None = None
    port: EnvName | None = None
    user: EnvName | None = None
    password: EnvName | None = None
    prefix: EnvName | None = Field(default=None, description="the key prefix the user owns")


class RabbitmqEnv(Frozen):
    host: EnvName | None = None
    port: EnvName | None = None
    vhost: EnvName | None = None
    user: EnvName | None = None
    password: EnvName | None = None


class PostgresEntry(Frozen):
    """A database of its own, cloned from a source an INFRA node offers, before the first
    boot (so the branch's migrations are what gets tested)."""

    model_config = ConfigDict(populate_by_name=True)
    source: Name = Field(alias="from", description="a source of the INFRA node's node.yaml")
    node: Name | None = Field(default=None, description="on this INFRA node")
    env: PostgresEnv = Field(default_factory=PostgresEnv)


class RedisEntry(Frozen):
    """An ACL user allowed only the keys and channels under ``<NAME>_PREFIX``."""

    node: Name | None = Field(default=None, description="on this INFRA node")
    env: RedisEnv = Field(default_factory=RedisEnv)


class RabbitmqEntry(Frozen):
    """A vhost of its own and a user with permissions there only."""

    node: Name | None = Field(default=None, description="on this INFRA node")
    env: RabbitmqEnv = Field(default_factory=RabbitmqEnv)


class DataEntry(Frozen):
    """One data service of a sandbox: exactly one of ``postgresql``, ``redis``, ``rabbitmq``."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["postgresql"]}, {"required": ["redis"]}, {"required": ["rabbitmq"]}]})
    postgresql: PostgresEntry | None = None
    redis: RedisEntry | None = None
    rabbitmq: RabbitmqEntry | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DataEntry:
        kinds = [k.value for k in DataKind if getattr(self, k.value) is not None]
        if len(kinds) != 1:
            given = ", ".join(kinds) if kinds else "none of them"
            raise ValueError(
                "a data entry is exactly one of 'postgresql: {from: SOURCE}', 'redis: {}' or "
                f"'rabbitmq: {{}}'; this one has {given}"
            )
        return self

    @property
    def kind(self) -> DataKind:
        for kind in DataKind:
            if getattr(self, kind.value) is not None:
                return kind
        raise AssertionError("validated: exactly one kind")  # pragma: no cover

    @property
    def spec(self) -> PostgresEntry | RedisEntry | RabbitmqEntry:
        found = getattr(self, self.kind.value)
        assert isinstance(found, PostgresEntry | RedisEntry | RabbitmqEntry)
        return found

    @property
    def source(self) -> str | None:
        return self.postgresql.source if self.postgresql is not None else None

    @property
    def node(self) -> str | None:
        return self.spec.node


DataEntries = dict[DataName, DataEntry]
"""The type of the ``data:`` field: entry name -> entry."""


def variable_names(name: str, entry: DataEntry) -> dict[DataSetting, str]:
    """The variable each setting of ``entry`` is injected as, renames applied."""
    base = name.upper().replace("-", "_")
    renamed = entry.spec.env.model_dump(exclude_none=True)
    return {setting: renamed.get(setting.value, f"{base}_{setting.value.upper()}")
            for setting in SETTINGS[entry.kind]}


def variable_collisions(entries: dict[str, DataEntry]) -> list[tuple[str, str, str]]:
    """(variable, entry, earlier entry) for every variable two entries would both set."""
    seen: dict[str, str] = {}
    out = []
    for name in sorted(entries):
        for variable in variable_names(name, entries[name]).values():
            if variable in seen:
                out.append((variable, name, seen[variable]))
            else:
                seen[variable] = name
    return out


class _SandboxShape(Frozen):
    extends: Name | None = Field(
        default=None, description="template to start from (a live reference)"
    )
    gateway: GatewaySpec | None = None
    environment: Name | None = Field(default=None, description="environment for every service")
    resources: Resources | None = Field(default=None, description="limits for each container")
    lifecycle: Lifecycle | None = None
    services: dict[Name, ServiceSpec] = Field(default_factory=dict)
    data: DataEntries = Field(
        default_factory=dict,
        description="data services of the sandbox on an INFRA node: a PostgreSQL clone, a "
        "Redis user, a RabbitMQ vhost (docs/infra.md); an entry replaces the same entry of "
        "the template whole",
    )


class SandboxFile(_SandboxShape):
    """``state/sandboxes/<name>.yaml``: one sandbox."""

    model_config = ConfigDict(
        json_schema_extra={"$id": f"{SCHEMA_BASE}/sandbox.schema.json"}, title="SDP sandbox"
    )
    sandbox: Name = Field(description="the sandbox's name; equals the file's stem")


class TemplateFile(_SandboxShape):
    """``state/templates/<name>.yaml``: a reusable sandbox configuration (no ports)."""

    model_config = ConfigDict(
        json_schema_extra={"$id": f"{SCHEMA_BASE}/template.schema.json"}, title="SDP template"
    )
    template: Name = Field(description="the template's name; equals the file's stem")


# --- environments -------------------------------------------------------------------------------


class EnvFile(Frozen):
    """A file mounted read-only into the containers that use the environment."""

    path: str = Field(description="absolute path inside the container")
    content: str | None = Field(default=None, description="the file's text")
    secret: SecretRef | None = Field(default=None, description="take the content from a secret")

    @model_validator(mode="after")
    def _check(self) -> EnvFile:
        problem = container_path_problem(self.path)
        if problem:
            raise ValueError(problem)
        if (self.content is None) == (self.secret is None):
            raise ValueError("a file has exactly one of 'content' or 'secret'")
        return self


def _stringify(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class EnvironmentFile(Frozen):
    """``state/environments/<name>.yaml``: variables, secret references and files."""

    model_config = ConfigDict(
        json_schema_extra={"$id": f"{SCHEMA_BASE}/environment.schema.json"},
        title="SDP environment",
    )
    environment: Name
    variables: dict[EnvName, str] = Field(
        default_factory=dict,
        description="values are text; numbers and booleans become text (5432, true)",
        # The model turns scalars into text (``_scalars_as_text``), so the schema must accept
        # them too, or editors and check-jsonschema reject ``DB_PORT: 5432``.
        json_schema_extra={
            "additionalProperties": {"type": ["string", "integer", "number", "boolean"]}
        },
    )
    secrets: dict[EnvName, SecretRef] = Field(default_factory=dict)
    files: list[EnvFile] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _scalars_as_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("variables"), dict):
            data = {**data, "variables": {k: _stringify(v) for k, v in data["variables"].items()}}
        return data


# --- ports.yaml ---------------------------------------------------------------------------------


class PortAllocation(Frozen):
    sandbox: Name
    service: Name = Field(description="a service name, or 'gateway'")
    node: Name
    port: Port
    allocated_at: datetime


class PortsFile(Frozen):
    """``state/ports.yaml``: port allocations, written by the reconciler (like a lock file)."""

    model_config = ConfigDict(
        json_schema_extra={"$id": f"{SCHEMA_BASE}/ports.schema.json"}, title="SDP ports"
    )
    allocations: list[PortAllocation] = Field(default_factory=list)


# --- notifications.yaml -------------------------------------------------------------------------


class NotificationEvent(StrEnum):
    DEPLOYMENT_STARTED = "DEPLOYMENT_STARTED"
    DEPLOYMENT_SUCCEEDED = "DEPLOYMENT_SUCCEEDED"
    DEPLOYMENT_FAILED = "DEPLOYMENT_FAILED"
    SANDBOX_EXPIRING = "SANDBOX_EXPIRING"
    SANDBOX_EXPIRED = "SANDBOX_EXPIRED"


class WebhookFormat(StrEnum):
    JSON = "json"
    SLACK = "slack"
    TEAMS = "teams"


_EMAIL_ADDRESS = re.compile(r"[^@\s<>,;\"']{1,64}@[A-Za-z0-9.-]{1,255}")


def _check_email_address(value: str) -> str:
    if not _EMAIL_ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain e-mail address (write name@example.com)")
    return value


EmailAddress = Annotated[str, AfterValidator(_check_email_address)]


class Email(Frozen):
    """An SMTP server to send notices through (plain text and HTML in one message)."""

    host: Host = Field(description="the SMTP server")
    port: Port = Field(default=587, description="default 587 (submission)")
    starttls: bool = Field(
        default=True,
        description="upgrade the connection with STARTTLS, verifying the server's certificate "
        "against the reconciler host's trust store; false only for a relay without "
        "credentials",
    )
    sender: EmailAddress = Field(description="the From address")
    to: list[EmailAddress] = Field(min_length=1, description="recipients")
    username: SecretRef | None = Field(
        default=None, description="SMTP login, as a reference (with password)")
    password: SecretRef | None = Field(
        default=None, description="SMTP password, as a reference (with username)")

    @model_validator(mode="after")
    def _login(self) -> Email:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both 'username' and 'password' (references), or neither")
        if self.username is not None and not self.starttls:
            raise ValueError("credentials are sent only over STARTTLS: remove "
                             "'starttls: false' or the credentials")
        return self


class Notification(Frozen):
    """Where to announce deployments: an incoming webhook (Slack, Microsoft Teams, or JSON) or
    e-mail over SMTP."""

    name: Name
    webhook: SecretRef | None = Field(
        default=None,
        description="the webhook URL, as a reference: such URLs carry their own token",
    )
    email: Email | None = Field(default=None, description="send by e-mail instead")
    format: WebhookFormat = WebhookFormat.JSON
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(NotificationEvent),
        description="which events to send (default: all)",
    )
    sandboxes: list[str] = Field(
        default_factory=list,
        description="only these sandboxes (shell patterns like 'QA-*'; default: all)",
    )

    @model_validator(mode="after")
    def _one_channel(self) -> Notification:
        if (self.webhook is None) == (self.email is None):
            raise ValueError("a notification has exactly one of 'webhook' or 'email'")
        return self


class NotificationsFile(Frozen):
    """``state/notifications.yaml``: deployment notifications (optional)."""

    model_config = ConfigDict(
        json_schema_extra={"$id": f"{SCHEMA_BASE}/notifications.schema.json"},
        title="SDP notifications",
    )
    notifications: list[Notification] = Field(default_factory=list)


SCHEMA_MODELS: dict[str, type[Frozen]] = {
    "nodes": NodesFile,
    "sandbox": SandboxFile,
    "template": TemplateFile,
    "environment": EnvironmentFile,
    "ports": PortsFile,
    "notifications": NotificationsFile,
}
