"""What the planner knows about the world, as plain data: nodes, observations, branch heads,
resolved environments. Built by ``observing.py`` (I/O); consumed by ``planning.py`` (pure).
"""

from __future__ import annotations

from datetime import datetime

from msgspec import Struct, field

from sdp_node.metricswire import ContainerMetrics
from sdp_node.naming import DEFAULT_NAMES, ResourceNames
from sdp_node.protocol import EnvFileMount, Observation, RepositoryInfo, RepositoryKind, Secret
from sdp_reconciler.planner.routetable import DEFAULT_VARIABLE
from sdp_reconciler.state.models import HealthRules, Node, NodeType


class ResolvedEnvironment(Struct, frozen=True):
    """An environment with its secret references resolved (values are ``Secret``)."""

    name: str
    variables: dict[str, str]
    secrets: dict[str, Secret]
    files: tuple[EnvFileMount, ...] = ()


class NodeView(Struct, frozen=True):
    node: Node
    observation: Observation | None = None
    unreachable: str | None = None
    repositories: dict[str, RepositoryInfo] = field(default_factory=dict)
    metrics: dict[str, ContainerMetrics] = field(default_factory=dict)
    """container -> its recent samples (the agent's background sampler), where reported"""

    @property
    def reachable(self) -> bool:
        return self.observation is not None

    def serves(self, repository: str, kind: RepositoryKind) -> bool:
        info = self.repositories.get(repository)
        return info is not None and info.kind is kind


class World(Struct, frozen=True):
    installation: str
    spec_key: bytes
    nodes: dict[str, NodeView]
    names: ResourceNames = DEFAULT_NAMES
    """the installation's container and network names"""
    heads: dict[str, dict[str, str]] = field(default_factory=dict)
    """repository -> branch -> commit, as ls-remote reported them this pass"""
    head_errors: dict[str, str] = field(default_factory=dict)
    environments: dict[str, ResolvedEnvironment] = field(default_factory=dict)
    environment_errors: dict[str, str] = field(default_factory=dict)
    committed_routes: dict[str, dict[str, str]] = field(default_factory=dict)
    """gateway commit -> the route values it carries (the OCP values), where known"""
    service_url_variable: str | None = DEFAULT_VARIABLE
    """how the services' URL variables are named (nodes.yaml ``service_url_variable``);
    None: none are injected"""
    health_rules: HealthRules = field(default_factory=HealthRules)
    """nodes.yaml ``health``: what Degraded and Unhealthy mean"""

    def nodes_of(self, node_type: NodeType) -> list[NodeView]:
        return [v for _, v in sorted(self.nodes.items()) if v.node.type is node_type]


class Allocation(Struct, frozen=True):
    sandbox: str
    service: str
    node: str
    port: int
    allocated_at: datetime
