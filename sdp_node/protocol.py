"""The wire contract between ``sdp-reconcile`` and ``sdp-node`` (HTTP+JSON and SSE, ``/v1``).

Both sides import this module and nothing else of each other. Everything here is pydantic data:
requests, answers, convergence steps and the events an agent streams. Promises:

* a plan is explicit: steps carry final resource names, resolved commit SHAs and the spec hash
  the agent stamps as given;
* credentials and resolved secret values are ``Secret``: their ``repr``/``str`` is ``***``
  and they are revealed only when a model is serialised for the wire (``model_dump_json``);
* events carry the seed's stage and event names, with monotonically increasing ids per stream;
* INFRA nodes (docs/infra.md) add data steps, a ``data_service`` on step results and data
  fields on the observation, all additive: MICRO and GATEWAY steps and answers are unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import core_schema

API_PREFIX = "/v1"
PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 4 * 1024 * 1024

# Labels stamped on everything SDP creates; an agent acts only on objects carrying its own
# ``sdp.instance`` and ``sdp.node``.
LABEL_MANAGED = "sdp.managed"
LABEL_INSTANCE = "sdp.instance"
LABEL_NODE = "sdp.node"
LABEL_SANDBOX = "sdp.sandbox"
LABEL_SERVICE = "sdp.service"
LABEL_REPOSITORY = "sdp.repository"
LABEL_BRANCH = "sdp.branch"
LABEL_COMMIT = "sdp.commit"
LABEL_PORT = "sdp.port"
LABEL_SPEC = "sdp.spec"
LABEL_KIND = "sdp.kind"
LABEL_TREE = "sdp.tree"
"""on a gateway that switches commits inside the running container: ``switch``"""
TREE_SWITCH = "switch"

ASIDE_SUFFIX = "--previous"
"""a container's previous instance: kept aside during an in-place replacement (stopped), or
still serving after a switch until the routes moved and it drained (running)"""
NEXT_SUFFIX = "--next"
"""a switch's new container, not yet confirmed healthy"""


class Secret:
    """A value that must not be shown: ``repr``/``str`` give ``***``; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        from_str = core_schema.no_info_after_validator_function(cls, core_schema.str_schema())
        return core_schema.json_or_python_schema(
            json_schema=from_str,
            python_schema=core_schema.union_schema(
                [core_schema.is_instance_schema(cls), from_str]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.reveal(), when_used="json"
            ),
        )


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class NodeType(StrEnum):
    MICRO = "MICRO"
    GATEWAY = "GATEWAY"
    INFRA = "INFRA"


class RepositoryKind(StrEnum):
    GO = "go"
    PHP = "php"


class Credentials(Wire):
    """Bitbucket credentials of one operation; held in memory only while it runs."""

    username: Secret
    password: Secret


# --- info, repositories, branches ----------------------------------------------------------------


class NodeInfo(Wire):
    name: str
    type: NodeType
    installation: str
    resource_prefix: str = Field(
        default="sandbox", description="first part of every container and network name"
    )
    protocol: int = PROTOCOL_VERSION
    version: str


IDENTITY_CONTEXT = "sdp-agent-identity/1"


class IdentityRequest(Wire):
    """``POST /v1/identify``, sent before any credential: prove you hold the token."""

    nonce: str = Field(pattern=r"^[0-9a-f]{32,128}$", description="fresh random hex")


class IdentityProof(Wire):
    node: NodeInfo
    proof: str = Field(description="identity_proof(token, nonce, node), hex")


def identity_proof(token: str, nonce: str, node: NodeInfo) -> str:
    """HMAC-SHA256 under the agent's token of the nonce and who the agent says it is.

    The reconciler, which holds the same token, checks it before it sends the token or any
    credential: a host that took over an agent's address, or an agent of another node or
    installation, cannot produce it. Domain-separated from every other use of the token.
    """
    message = "\n".join([IDENTITY_CONTEXT, nonce, node.name, node.type.value,
                         node.installation, node.resource_prefix])
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


class RepositoryInfo(Wire):
    name: str
    kind: RepositoryKind
    image: str
    container_port: int
    health_path: str
    url_prefix: str | None = None
    routes_file: str | None = None


class BranchesRequest(Wire):
    repository: str
    credentials: Credentials


class CommittedRoutesRequest(Wire):
    repository: str
    commit: str
    credentials: Credentials | None = Field(
        default=None, description="to fetch the commit first when the node lacks it"
    )


class CommittedRoutesResponse(Wire):
    repository: str
    commit: str
    routes: dict[str, str] = Field(description="service key -> URL the commit carries")


class BranchesResponse(Wire):
    repository: str
    heads: dict[str, str] = Field(description="branch name -> commit SHA")


# --- data services (INFRA nodes) ----------------------------------------------------------------


class DataKind(StrEnum):
    """What an INFRA node's data service is: the server it lives on."""

    POSTGRESQL = "postgresql"
    REDIS = "redis"
    RABBITMQ = "rabbitmq"


class DataState(StrEnum):
    READY = "ready"
    INCOMPLETE = "incomplete"
    """SDP's, but half-made or half-dropped (an agent killed mid-clone, a user lost with a
    restart): the next ensure re-makes it, the next drop finishes it."""


class DataSourceKind(StrEnum):
    TEMPLATE = "template"
    """a PostgreSQL database copied with ``CREATE DATABASE ... TEMPLATE``"""
    DUMP = "dump"
    """a ``pg_dump -Fc`` file restored with ``pg_restore``"""


class DataSourceInfo(Wire):
    """A source a sandbox's PostgreSQL entry may clone (``from: NAME``), as node.yaml names it."""

    name: str
    kind: DataSourceKind
    location: str = Field(description="the template database's name, or the dump file's path")
    size_bytes: int | None = None
    problem: str | None = Field(
        default=None, description="why a clone from it would fail now (missing, busy, ...)"
    )
    captured_from: str | None = Field(
        default=None, description="a source SDP captured (CaptureDatabase): the sandbox and "
        "entry it was copied from, 'SANDBOX/ENTRY'; None for node.yaml's sources"
    )
    created_at: datetime | None = None


class DataServerInfo(Wire):
    """A server the INFRA node manages, as sandbox containers reach it."""

    kind: DataKind
    host: str = Field(description="what containers use to reach it (node.yaml advertise_host)")
    port: int
    reachable: bool
    version: str | None = None
    problem: str | None = None


class ObservedDataService(Wire):
    """One data service SDP made on this node, found by its ownership marker (docs/infra.md)."""

    kind: DataKind
    name: str = Field(description="database, Redis ACL user or RabbitMQ vhost")
    user: str = Field(description="the role or user the sandbox logs in as")
    sandbox: str
    service: str = Field(description="the entry's name in the sandbox's data: (e.g. db)")
    source: str | None = Field(
        default=None, description="PostgreSQL: the source it was cloned from"
    )
    state: DataState
    spec_hash: str | None = Field(default=None, description="as the last ensure stamped it")
    key_prefix: str | None = Field(default=None, description="Redis: the keys the user owns")
    size_bytes: int | None = None
    created_at: datetime | None = None
    problem: str | None = None


# --- observe -------------------------------------------------------------------------------------


class ObservedContainer(Wire):
    name: str
    id: str
    labels: dict[str, str]
    state: str = Field(description="docker state: created, running, exited, restarting, ...")
    status: str = Field(description="docker's status text, e.g. 'Up 5 minutes'")
    started_at: datetime | None = None
    restart_count: int = 0
    health: str | None = Field(default=None, description="healthy / unhealthy / starting")
    health_check: str | None = Field(
        default=None,
        description="the health path's answer at observe time: 'ok', 'HTTP 503', or why it "
        "failed (running containers only)",
    )
    image: str
    aside: bool = Field(
        default=False, description="a previous container kept aside during a replacement "
        "(<name>--previous) or a new one not yet confirmed healthy (<name>--next)"
    )


class FailureReason(StrEnum):
    """Why a commit could not be deployed; remembered per (container, spec hash)."""

    BUILD_FAILED = "BuildFailed"
    CRASHED_ON_START = "CrashedOnStart"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"


class ObservedFailure(Wire):
    """A deploy that failed and is not retried until the spec (commit, settings) changes or a
    restart asks: the previous container, if any, kept serving."""

    container: str
    sandbox: str
    service: str
    commit: str
    spec_hash: str = Field(description="the failed attempt's ContainerSpec.attempt_key")
    reason: FailureReason
    message: str
    health_answer: str | None = Field(
        default=None, description="the health path's last answer (HTTP 500, refused, ...)"
    )
    log_tail: list[str] = Field(default_factory=list, description="the container's last lines")
    at: datetime


class ObservedNetwork(Wire):
    name: str
    id: str
    labels: dict[str, str]
    subnet: str | None = None


class ObservedGateway(Wire):
    container: str
    sandbox: str
    commit: str
    live_routes: dict[str, str] = Field(description="<key>_url values read from config.php")
    committed_routes: dict[str, str] = Field(
        description="<key>_url values the commit itself carries (the OCP values), read from git"
    )
    problem: str | None = None


class Observation(Wire):
    node: NodeInfo
    containers: list[ObservedContainer]
    networks: list[ObservedNetwork]
    gateways: list[ObservedGateway]
    last_applied: dict[str, dict[str, Any]] = Field(
        description="container name -> the public (secret-free) spec last applied to it"
    )
    operations_in_flight: list[str]
    conflicts: list[str] = Field(
        default_factory=list,
        description="objects in SDP's way that it does not own (reported, never touched)",
    )
    failures: list[ObservedFailure] = Field(
        default_factory=list, description="remembered failed deploys, one per container"
    )
    data_servers: list[DataServerInfo] = Field(
        default_factory=list, description="INFRA nodes: the servers the node manages"
    )
    data_sources: list[DataSourceInfo] = Field(
        default_factory=list, description="INFRA nodes: what a PostgreSQL entry may clone"
    )
    data_services: list[ObservedDataService] = Field(
        default_factory=list, description="INFRA nodes: the data services SDP made here"
    )


class ContainerStats(Wire):
    name: str
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int


# --- convergence steps ---------------------------------------------------------------------------


class EnvFileMount(Wire):
    path: str
    content: Secret
    secret: bool = Field(default=False, description="the content is a resolved secret")


class ContainerSpec(Wire):
    """What a deployed container must look like; part of both deploy steps."""

    sandbox: str
    service: str
    container: str
    repository: str
    branch: str
    commit: str
    port: int
    spec_hash: str
    public_spec: dict[str, Any] = Field(
        description="the resolved spec with secret values replaced by digests; kept by the "
        "agent as the container's last applied spec"
    )
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, Secret] = Field(default_factory=dict)
    files: list[EnvFileMount] = Field(default_factory=list)
    cpu_millicores: int | None = None
    memory_bytes: int | None = None
    recreate: bool = Field(
        default=False, description="replace the container even when its spec hash matches"
    )
    failure_key: str | None = Field(
        default=None, description="what a remembered failure of this deploy is keyed by (the "
        "spec hash without the port, which a switch changes); default: spec_hash"
    )

    @property
    def attempt_key(self) -> str:
        return self.failure_key or self.spec_hash


class EnsureNetwork(Wire):
    action: Literal["ensure_network"] = "ensure_network"
    step_id: str
    sandbox: str
    network: str


class DeployService(Wire):
    action: Literal["deploy_service"] = "deploy_service"
    step_id: str
    spec: ContainerSpec
    network: str


class DeployGateway(Wire):
    action: Literal["deploy_gateway"] = "deploy_gateway"
    step_id: str
    spec: ContainerSpec
    routes: dict[str, str] = Field(description="service key -> URL written as <key>_url")


class SetRoutes(Wire):
    action: Literal["set_routes"] = "set_routes"
    step_id: str
    sandbox: str
    container: str
    routes: dict[str, str]


class StopContainer(Wire):
    action: Literal["stop"] = "stop"
    step_id: str
    container: str


class StartContainer(Wire):
    action: Literal["start"] = "start"
    step_id: str
    container: str


class RemoveContainer(Wire):
    action: Literal["remove"] = "remove"
    step_id: str
    container: str


class RetireContainer(Wire):
    """Finish a switch: the routes now point at ``container``, so its previous instance
    (``<container>--previous``, still serving what was sent to it) drains and goes."""

    action: Literal["retire"] = "retire"
    step_id: str
    container: str


class DrainContainer(Wire):
    """Finish a move to another node: the routes now point at the service's new container on
    that node, so this one (still serving what was sent to it) drains and goes, as
    ``remove`` would remove it."""

    action: Literal["drain"] = "drain"
    step_id: str
    container: str


class RemoveNetwork(Wire):
    action: Literal["remove_network"] = "remove_network"
    step_id: str
    network: str


class _DataStep(Wire):
    step_id: str
    sandbox: str
    service: str = Field(description="the data entry's name in the sandbox (e.g. db)")


class _EnsureData(_DataStep):
    password: Secret = Field(
        description="the sandbox user's password (16-128 printable ASCII characters, no space); "
        "the agent hands the servers only salted hashes of it"
    )
    spec_hash: str = Field(description="stamped on the ownership marker as given, like sdp.spec")


class EnsureDatabase(_EnsureData):
    """A sandbox's own PostgreSQL database and role (same name), cloned from ``source`` if it
    does not exist yet or was left half-made; its password set either way."""

    action: Literal["ensure_database"] = "ensure_database"
    database: str
    source: str = Field(description="a source of the node's node.yaml")


class RecloneDatabase(_EnsureData):
    """Replace a sandbox's database with a fresh clone of ``source`` (``reset``); the role and
    its password stay."""

    action: Literal["reclone_database"] = "reclone_database"
    database: str
    source: str


class DropDatabase(_DataStep):
    action: Literal["drop_database"] = "drop_database"
    database: str


class CaptureDatabase(_DataStep):
    """Copy a sandbox's database into a new template source ``source`` owned by SDP's
    administrator (database ``template`` = ``ResourceNames.captured_source(source)``), which
    later ``EnsureDatabase`` steps may name. The sandbox's own sessions on its database are
    ended for the copy; a name that is already a source or a database is refused."""

    action: Literal["capture_database"] = "capture_database"
    database: str
    source: str
    template: str


class DropCapturedSource(_DataStep):
    """Drop a source SDP captured (never one of node.yaml's, never a database SDP did not
    make); ``sandbox``/``service`` are the entry it was captured from, as observed."""

    action: Literal["drop_captured_source"] = "drop_captured_source"
    source: str
    template: str


class EnsureRedisUser(_EnsureData):
    """A Redis ACL user allowed only the keys and channels starting with ``key_prefix``."""

    action: Literal["ensure_redis_user"] = "ensure_redis_user"
    user: str
    key_prefix: str


class DropRedisUser(_DataStep):
    """Delete the ACL user (closing its connections) and every key under its prefix."""

    action: Literal["drop_redis_user"] = "drop_redis_user"
    user: str


class EnsureRabbitmqVhost(_EnsureData):
    """A RabbitMQ vhost and a user (same name) with permissions there and nowhere else."""

    action: Literal["ensure_rabbitmq_vhost"] = "ensure_rabbitmq_vhost"
    vhost: str
    user: str


class DropRabbitmqVhost(_DataStep):
    action: Literal["drop_rabbitmq_vhost"] = "drop_rabbitmq_vhost"
    vhost: str
    user: str


DataStep = (
    EnsureDatabase | RecloneDatabase | DropDatabase | EnsureRedisUser | DropRedisUser
    | EnsureRabbitmqVhost | DropRabbitmqVhost | CaptureDatabase | DropCapturedSource
)
"""The steps of an INFRA node (a plain union, for ``isinstance``)."""
DATA_STEP_TYPES = (
    EnsureDatabase, RecloneDatabase, DropDatabase, EnsureRedisUser, DropRedisUser,
    EnsureRabbitmqVhost, DropRabbitmqVhost, CaptureDatabase, DropCapturedSource,
)


Step = Annotated[
    EnsureNetwork | DeployService | DeployGateway | SetRoutes | StopContainer | StartContainer
    | RemoveContainer | RetireContainer | DrainContainer | RemoveNetwork | EnsureDatabase
    | RecloneDatabase
    | DropDatabase | EnsureRedisUser | DropRedisUser | EnsureRabbitmqVhost | DropRabbitmqVhost
    | CaptureDatabase | DropCapturedSource,
    Field(discriminator="action"),
]


class ApplyRequest(Wire):
    lease_id: str
    requested_by: str = Field(description="who runs the reconcile (never a git username)")
    credentials: Credentials | None = None
    steps: list[Step]


class ApplyResponse(Wire):
    operation_id: str


# --- leases --------------------------------------------------------------------------------------


class LeaseRequest(Wire):
    holder: str
    ttl_seconds: float = Field(gt=0, le=3600)


class Lease(Wire):
    id: str
    holder: str
    expires_at: datetime


# --- events --------------------------------------------------------------------------------------


class Stage(StrEnum):
    FETCH = "git fetch"
    CHECKOUT = "git checkout"
    GO_BUILD = "go build"
    COMPOSER = "composer install"
    START = "start container"
    ROUTES = "routes"
    NETWORK = "network"
    STOP = "stop container"
    REMOVE = "remove"
    CLONE = "clone database"
    CAPTURE = "capture database"
    DROP = "drop data"


class EventName(StrEnum):
    FETCH_STARTED = "FETCH_STARTED"
    FETCH_COMPLETED = "FETCH_COMPLETED"
    CHECKOUT_STARTED = "CHECKOUT_STARTED"
    CHECKOUT_COMPLETED = "CHECKOUT_COMPLETED"
    BUILD_STARTED = "BUILD_STARTED"
    BUILD_COMPLETED = "BUILD_COMPLETED"
    DEPLOY_STARTED = "DEPLOY_STARTED"
    DEPLOY_COMPLETED = "DEPLOY_COMPLETED"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    ROUTES_STARTED = "ROUTES_STARTED"
    ROUTES_COMPLETED = "ROUTES_COMPLETED"
    CLONE_STARTED = "CLONE_STARTED"
    CLONE_COMPLETED = "CLONE_COMPLETED"


class DeployState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    REMOVED = "REMOVED"


STAGE_EVENTS: dict[Stage, tuple[EventName, EventName]] = {
    Stage.FETCH: (EventName.FETCH_STARTED, EventName.FETCH_COMPLETED),
    Stage.CHECKOUT: (EventName.CHECKOUT_STARTED, EventName.CHECKOUT_COMPLETED),
    Stage.GO_BUILD: (EventName.BUILD_STARTED, EventName.BUILD_COMPLETED),
    Stage.COMPOSER: (EventName.BUILD_STARTED, EventName.BUILD_COMPLETED),
    Stage.START: (EventName.DEPLOY_STARTED, EventName.DEPLOY_COMPLETED),
    Stage.ROUTES: (EventName.ROUTES_STARTED, EventName.ROUTES_COMPLETED),
    Stage.CLONE: (EventName.CLONE_STARTED, EventName.CLONE_COMPLETED),
}


class StepResult(Wire):
    step_id: str
    action: str
    ok: bool
    state: DeployState
    changed: bool = Field(description="whether anything was changed on the node")
    container: str | None = None
    commit: str | None = None
    port: int | None = None
    stage: Stage | None = Field(default=None, description="the failing stage, if any")
    message: str = ""
    output_tail: list[str] = Field(default_factory=list)
    reason: FailureReason | None = Field(
        default=None, description="deploys: why the commit failed (remembered by the node)"
    )
    health_answer: str | None = None
    remembered: bool = Field(
        default=False, description="the failure was remembered from an earlier attempt: "
        "nothing was built or started this time"
    )
    data_service: ObservedDataService | None = Field(
        default=None, description="data steps: the service as the step left it (None: gone)"
    )


class OperationEvent(Wire):
    """One item of an operation's stream: a stage event, a log line, a state or a result."""

    id: int
    operation_id: str
    step_id: str | None = None
    at: datetime
    kind: Literal["event", "log", "state", "result", "end"]
    stage: Stage | None = None
    event: EventName | None = None
    state: DeployState | None = None
    message: str = ""
    result: StepResult | None = None


class OperationSummary(Wire):
    id: str
    requested_by: str
    started_at: datetime
    finished_at: datetime | None
    done: bool
    ok: bool | None
    steps: int
    results: list[StepResult]


class ErrorBody(Wire):
    code: str
    message: str


class ErrorResponse(Wire):
    error: ErrorBody
