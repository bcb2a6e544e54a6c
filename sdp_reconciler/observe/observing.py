"""Observe every node at once, then resolve the branch heads this pass needs.

Nodes are asked concurrently, each with a time limit; an unreachable node is reported (the
sandboxes that need it are left alone) and the others proceed. Branch heads are resolved
through the agents, once per repository per pass, with the runner's git credentials; the first
refusal is LOGIN FAILED and stops the pass before any deploy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from sdp_node.naming import GATEWAY
from sdp_node.protocol import Credentials
from sdp_reconciler.errors import AgentError, CredentialsError, SdpError
from sdp_reconciler.observe.node_client import NodeClient
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.world import NodeView
from sdp_reconciler.state.models import Node
from sdp_reconciler.state.resolved import ResolvedSandbox

Report = Callable[[str], None]


def observe_nodes(
    nodes: Iterable[Node], clients: dict[str, NodeClient], *, timeout: float = 30.0
) -> dict[str, NodeView]:
    nodes = list(nodes)

    def one(node: Node) -> NodeView:
        client = clients[node.name]
        try:
            observation = client.observe(timeout=timeout)
            repositories = {r.name: r for r in client.repositories()}
        except SdpError as e:
            return NodeView(node=node, unreachable=str(e))
        if observation.node.type.value != node.type.value:
            return NodeView(
                node=node,
                unreachable=f"the agent says it is a {observation.node.type.value} node, "
                f"nodes.yaml says {node.type.value}",
            )
        return NodeView(node=node, observation=observation, repositories=repositories)

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
        views = list(pool.map(one, nodes))
    return {view.node.name: view for view in views}


def check_installation(views: dict[str, NodeView], installation: str,
                       prefix: str) -> dict[str, NodeView]:
    """Views of agents of another installation become unreachable (never acted upon)."""
    out = {}
    for name, view in views.items():
        info = view.observation.node if view.observation is not None else None
        if info is not None and info.installation == installation \
                and info.resource_prefix != prefix:
            out[name] = NodeView(
                node=view.node,
                unreachable=f"the agent at {view.node.agent_url} names its containers "
                f"{info.resource_prefix}-..., nodes.yaml says resource_prefix {prefix!r}: "
                "set the same resource_prefix in the agent's node.yaml and in nodes.yaml",
            )
        elif view.observation is not None and view.observation.node.installation != installation:
            out[name] = NodeView(
                node=view.node,
                unreachable=f"the agent at {view.node.agent_url} belongs to installation "
                f"{view.observation.node.installation!r}, not {installation!r}",
            )
        elif view.observation is not None and view.observation.node.name != name:
            out[name] = NodeView(
                node=view.node,
                unreachable=f"the agent at {view.node.agent_url} calls itself "
                f"{view.observation.node.name!r}, not {name!r}",
            )
        else:
            out[name] = view
    return out


def resolve_heads(
    placements: Iterable[Placement], views: dict[str, NodeView], clients: dict[str, NodeClient],
    credentials: Credentials, *, report: Report,
    source: str = "SDP_GIT_USERNAME / SDP_GIT_PASSWORD",
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """repository -> branch -> commit, and repository -> why it is unknown. LOGIN FAILED raises."""
    wanted: dict[str, str] = {}
    for placement in placements:
        if views[placement.node].reachable:
            wanted.setdefault(placement.repository, placement.node)
    heads: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}

    def one(item: tuple[str, str]) -> tuple[str, dict[str, str] | None, AgentError | SdpError
                                             | None]:
        repository, node = item
        try:
            return repository, clients[node].branches(repository, credentials), None
        except (AgentError, SdpError) as e:
            return repository, None, e

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(wanted)))) as pool:
        results = list(pool.map(one, sorted(wanted.items())))
    for repository, found, error in results:
        if isinstance(error, AgentError) and error.status == 403:
            report("LOGIN FAILED")
            raise CredentialsError(
                f"LOGIN FAILED: {error}. Check the git credentials in {source}"
            )
        if error is not None:
            errors[repository] = f"cannot list the branches of {repository}: {error}"
        elif found is not None:
            heads[repository] = found
    if heads:
        report("LOGIN SUCCESS")
    return heads, errors


def gateway_commit_routes(
    sandboxes: dict[str, ResolvedSandbox], placements: dict[tuple[str, str], Placement],
    heads: dict[str, dict[str, str]], views: dict[str, NodeView],
    clients: dict[str, NodeClient], credentials: Credentials | None, *, report: Report,
) -> dict[str, dict[str, str]]:
    """Gateway commit -> the route values it carries, for every gateway commit this pass
    wants: from what running gateways reported, else asked of the gateway's agent (which
    fetches the commit if it must). Lets the plan check route keys at file:line:col."""
    known: dict[str, dict[str, str]] = {}
    for view in views.values():
        for running in view.observation.gateways if view.observation else []:
            if running.problem is None:
                known.setdefault(running.commit, running.committed_routes)
    wanted: dict[str, tuple[str, str]] = {}
    for (name, service), placement in placements.items():
        gateway = sandboxes[name].gateway if service == GATEWAY else None
        if gateway is None or not views[placement.node].reachable:
            continue
        commit = gateway.spec.commit or heads.get(placement.repository, {}).get(
            gateway.spec.branch or "")
        if commit and commit not in known:
            wanted.setdefault(commit, (placement.node, placement.repository))

    def one(item: tuple[str, tuple[str, str]]) -> tuple[str, dict[str, str] | None]:
        commit, (node, repository) = item
        try:
            return commit, clients[node].committed_routes(repository, commit, credentials)
        except SdpError as e:
            report(f"routes of {repository} at {commit[:7]} unknown before deploying: {e}")
            return commit, None

    with ThreadPoolExecutor(max_workers=max(1, min(4, len(wanted)))) as pool:
        for commit, routes in pool.map(one, sorted(wanted.items())):
            if routes is not None:
                known[commit] = routes
    return known
