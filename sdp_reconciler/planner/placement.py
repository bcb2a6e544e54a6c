"""Which node runs each sandbox service and gateway. Pure.

A service runs on the MICRO node its sandbox pins, else on a MICRO node whose agent serves a
repository of that name: the one it already runs on, if that one still serves it, else the first
by name (stable across passes). A gateway runs on the pinned GATEWAY node, else the first
GATEWAY node serving the gateway repository (``gateway.repository``, else the node's only PHP
repository). What cannot be placed is a problem at the entry's ``file:line:col``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sdp_node.naming import GATEWAY
from sdp_node.protocol import LABEL_NODE, RepositoryKind
from sdp_reconciler.planner.world import NodeView, World
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import NodeType, PortAllocation
from sdp_reconciler.state.resolved import ResolvedSandbox


@dataclass(frozen=True)
class Placement:
    sandbox: str
    service: str
    node: str
    repository: str
    location: Location


def _running_nodes(world: World) -> dict[str, list[str]]:
    """Container name -> the nodes running it, by node name (two after a move)."""
    found: dict[str, list[str]] = {}
    for node, view in sorted(world.nodes.items()):
        if view.observation is None:
            continue
        for container in view.observation.containers:
            if not container.aside:
                found.setdefault(container.name, []).append(
                    container.labels.get(LABEL_NODE) or node)
    return found


def place(
    sandboxes: dict[str, ResolvedSandbox], world: World,
    previous: Iterable[PortAllocation] = (),
) -> tuple[dict[tuple[str, str], Placement], list[Problem]]:
    """Where each deployed service and gateway runs; ``previous`` is ports.yaml's memory of
    where they ran (it keeps a service on its node while that node is unreachable)."""
    before = {(a.sandbox, a.service): a.node for a in previous}
    running = _running_nodes(world)
    placements: dict[tuple[str, str], Placement] = {}
    problems: list[Problem] = []
    micro = world.nodes_of(NodeType.MICRO)
    gateways = world.nodes_of(NodeType.GATEWAY)
    for name, sandbox in sorted(sandboxes.items()):
        for service in sandbox.deployed_services():
            placed = _place_one(
                world, micro, sandbox=name, service=service.name, repository=service.name,
                pinned=service.spec.node, kind=RepositoryKind.GO, location=service.origin,
                previous=before.get((name, service.name)),
                running=running.get(world.names.container(name, service.name), []),
            )
            if isinstance(placed, Problem):
                problems.append(placed)
            else:
                placements[(name, service.name)] = placed
        if sandbox.gateway is None:
            continue
        spec = sandbox.gateway.spec
        repository = spec.repository or _only_php_repository(gateways, spec.node)
        if repository is None:
            unreachable = [v.node.name for v in gateways if not v.reachable
                           and spec.node in (None, v.node.name)]
            problems.append(Problem(
                sandbox.gateway.origin, "gateway.repository",
                f"GATEWAY node {', '.join(unreachable)} is unreachable, so its gateway "
                "repository is unknown this pass" if unreachable else
                "cannot tell which repository is the gateway: no GATEWAY node serves exactly "
                "one PHP repository; name it with 'gateway: {repository: NAME}'",
            ))
            continue
        placed = _place_one(
            world, gateways, sandbox=name, service=GATEWAY, repository=repository,
            pinned=spec.node, kind=RepositoryKind.PHP, location=sandbox.gateway.origin,
            previous=before.get((name, GATEWAY)),
            running=running.get(world.names.container(name, GATEWAY), []),
        )
        if isinstance(placed, Problem):
            problems.append(placed)
        else:
            placements[(name, GATEWAY)] = placed
    return placements, problems


def _only_php_repository(gateways: list[NodeView], pinned: str | None) -> str | None:
    names = {
        repo.name
        for view in gateways if pinned in (None, view.node.name)
        for repo in view.repositories.values() if repo.kind is RepositoryKind.PHP
    }
    return next(iter(names)) if len(names) == 1 else None


def _place_one(
    world: World, candidates: list[NodeView], *, sandbox: str, service: str, repository: str,
    pinned: str | None, kind: RepositoryKind, location: Location, previous: str | None = None,
    running: list[str] | None = None,
) -> Placement | Problem:
    path = "gateway" if service == GATEWAY else f"services.{service}"
    kind_name = "GATEWAY" if service == GATEWAY else "MICRO"
    if pinned is not None:
        view = world.nodes.get(pinned)
        if view is None:
            return Problem(location, f"{path}.node", f"unknown node {pinned!r}")
        if view.reachable and not view.serves(repository, kind):
            return Problem(
                location, f"{path}.node",
                f"node {pinned} serves no {kind.value} repository named {repository!r} "
                f"(it serves: {', '.join(sorted(view.repositories)) or 'nothing'})",
            )
        return Placement(sandbox, service, pinned, repository, location)
    if previous is not None and any(
        v.node.name == previous and not v.reachable for v in candidates
    ):
        # Its node is unreachable: keep it there (the sandbox is left as is this pass)
        # rather than start a second copy elsewhere.
        return Placement(sandbox, service, previous, repository, location)
    serving = [v for v in candidates if v.serves(repository, kind)]
    if not serving:
        unreachable = [v.node.name for v in candidates if not v.reachable]
        served = sorted({r for v in candidates for r, info in v.repositories.items()
                         if info.kind is kind})
        detail = f"served: {', '.join(served)}" if served else "they serve none"
        if unreachable:
            detail += f"; unreachable, so unknown: {', '.join(unreachable)}"
        return Problem(
            location, path,
            f"no {kind_name} node serves a {kind.value} repository named {repository!r} "
            f"({detail})",
        )
    running = running or []
    preferred = [previous] if previous in running else running
    chosen = next((v for n in preferred for v in serving if v.node.name == n), serving[0])
    return Placement(sandbox, service, chosen.node.name, repository, location)
