"""Which node runs each sandbox service and gateway. Pure.

A service runs on the MICRO node its sandbox pins; else, nothing moving without a reason, where
it runs now (or, not running, where ports.yaml last put it) while that node still serves its
repository; else (a new service, or its node stopped serving it) on the MICRO node serving that
repository with the most room left: capacity first (``nodes.yaml`` ``capacity``: the largest
share of CPU, memory or containers the node would have in use, counting every service placed
there this pass with its ``resources``), then the fewest containers, then the name. A node
without ``capacity`` (or without one of its three) is limited by nothing and counts, for the
comparison, as large as the largest declared; with no capacity declared anywhere, the fewest
containers win. A node whose declared capacity the service does not fit is not chosen; a
``cordoned`` node gets nothing new (what runs there stays); a ``drained`` one gets nothing new
and keeps nothing: what runs there is placed anew like a new service (``planner/moves.py``
plans the move; a service pinned to a drained node is a problem). New services are placed in
sandbox and service name order, so the same inputs always give the same placements. A service
whose node is unreachable stays placed there (reported, never moved on its own), drained or not.

A gateway runs on the pinned GATEWAY node, else where it runs, else the first uncordoned
GATEWAY node serving the gateway repository (``gateway.repository``, else the node's only PHP
repository). What cannot be placed is a problem at the entry's ``file:line:col``.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable

from msgspec import Struct, field

from sdp_node.naming import GATEWAY
from sdp_node.protocol import LABEL_NODE, RepositoryKind
from sdp_reconciler.planner.world import NodeView, World
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import (
    NodeType,
    PortAllocation,
    Resources,
    cpu_millicores,
    memory_bytes,
)
from sdp_reconciler.state.resolved import ResolvedSandbox, ResolvedService


class Placement(Struct, frozen=True):
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


class Need(Struct, frozen=True):
    """What one service takes of a node."""

    cpu: int = 0
    """millicores"""
    memory: int = 0
    """bytes"""

    @staticmethod
    def of(resources: Resources | None) -> Need:
        if resources is None:
            return _NO_NEED
        return _need(resources.cpu, resources.memory)


_NO_NEED = Need()


@functools.lru_cache(maxsize=1024)
def _need(cpu: str | None, memory: str | None) -> Need:
    """Parsed once per distinct quantity pair: thousands of services share a handful."""
    return Need(cpu_millicores(cpu) if cpu else 0, memory_bytes(memory) if memory else 0)


class Load(Struct):
    """What the services placed on one node this pass take of it."""

    cpu: int = 0
    memory: int = 0
    containers: int = 0

    def add(self, need: Need) -> None:
        self.cpu += need.cpu
        self.memory += need.memory
        self.containers += 1


Score = tuple[float, int, str]
"""(share of the node's capacity in use after, its containers, its name): the smallest wins"""


class _Ranking(Struct):
    """The nodes of one candidate set ranked by their score for one need, kept up to date
    lazily: an entry made before its node's load changed is scored again when it reaches the
    top. Loads only grow during a pass, so a node that stops fitting is dropped for good; each
    placement then costs a few heap operations instead of scoring every candidate."""

    heap: list[tuple[Score, int]]
    """(score, the node's load version it was computed at)"""
    like: Capacity
    """the largest capacity the set declares (``_Loads.share_after``)"""


class _Loads(Struct):
    views: dict[str, NodeView]
    loads: dict[str, Load] = field(default_factory=dict)
    capacities: dict[str, Capacity] = field(default_factory=dict)
    largest: dict[tuple[str, ...], Capacity] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    """node -> how many times its load changed this pass"""
    rankings: dict[tuple[tuple[str, ...], int, int], _Ranking] = field(default_factory=dict)
    set_names: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """id of a cached candidate list (``open_go``) -> its node names"""
    serving: dict[str, list[NodeView]] = field(default_factory=dict)
    open_serving: dict[str, list[NodeView]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.capacities = {name: _capacity(view) for name, view in self.views.items()}

    def serving_go(self, repository: str) -> list[NodeView]:
        """The candidate nodes serving Go ``repository`` (cached: 1,000s of services ask)."""
        if repository not in self.serving:
            self.serving[repository] = [v for v in self.views.values()
                                        if v.serves(repository, RepositoryKind.GO)]
        return self.serving[repository]

    def open_go(self, repository: str) -> list[NodeView]:
        """Of those, the ones that take new services (not cordoned or drained)."""
        if repository not in self.open_serving:
            self.open_serving[repository] = [v for v in self.serving_go(repository)
                                             if v.node.accepts_new]
        return self.open_serving[repository]

    def score(self, view: NodeView, need: Need, like: Capacity) -> Score | None:
        """The node's score for ``need`` now; None: it does not fit."""
        share = self.share_after(view, need, like)
        return None if share is None else (share, self.containers(view.node.name),
                                           view.node.name)

    def best(self, views: list[NodeView], need: Need) -> str | None:
        """The name of the node of ``views`` with the smallest score for ``need``; None: it
        fits none of them."""
        names = self.set_names.get(id(views))  # ``views``: one list per repository
        if names is None:
            names = self.set_names[id(views)] = tuple(v.node.name for v in views)
        key = (names, need.cpu, need.memory)  # repositories served by the same nodes share it
        ranking = self.rankings.get(key)
        if ranking is None:
            like = self.like(views)
            heap = [(score, self.versions.get(v.node.name, 0)) for v in views
                    if (score := self.score(v, need, like)) is not None]
            heapq.heapify(heap)
            ranking = self.rankings[key] = _Ranking(heap, like)
        heap, like = ranking.heap, ranking.like
        while heap:
            score, version = heap[0]
            name = score[2]
            if version == self.versions.get(name, 0):
                return name
            fresh = self.score(self.views[name], need, like)
            if fresh is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (fresh, self.versions.get(name, 0)))
        return None

    def like(self, views: list[NodeView]) -> Capacity:
        """The largest capacity ``views`` declare, per dimension (cached per set of nodes)."""
        key = tuple(v.node.name for v in views)
        if key not in self.largest:
            self.largest[key] = _largest([self.capacities[name] for name in key])
        return self.largest[key]

    def add(self, node: str, need: Need) -> None:
        self.loads.setdefault(node, Load()).add(need)
        self.versions[node] = self.versions.get(node, 0) + 1

    def share_after(self, view: NodeView, need: Need, like: Capacity) -> float | None:
        """The largest share of the node's capacity in use with ``need`` added; None: it does
        not fit. A dimension the node does not declare counts as ``like``'s (the largest any
        candidate declares) and never refuses; with none declared anywhere, 0.0."""
        load = self.loads.get(view.node.name, Load())
        own = self.capacities[view.node.name]
        shares = []
        for used, mine, other in ((load.cpu + need.cpu, own.cpu, like.cpu),
                                  (load.memory + need.memory, own.memory, like.memory),
                                  (load.containers + 1, own.containers, like.containers)):
            if mine is not None:
                if used > mine:
                    return None
                shares.append(used / mine)
            elif other is not None:
                shares.append(used / other)
        return max(shares, default=0.0)

    def containers(self, node: str) -> int:
        return self.loads.get(node, Load()).containers


class Capacity(Struct, frozen=True):
    cpu: int | None = None
    memory: int | None = None
    containers: int | None = None


def _capacity(view: NodeView) -> Capacity:
    declared = view.node.capacity
    if declared is None:
        return Capacity()
    return Capacity(cpu_millicores(declared.cpu) if declared.cpu else None,
                    memory_bytes(declared.memory) if declared.memory else None,
                    declared.containers)


def _largest(capacities: list[Capacity]) -> Capacity:
    cpus = [c.cpu for c in capacities if c.cpu is not None]
    memories = [c.memory for c in capacities if c.memory is not None]
    containers = [c.containers for c in capacities if c.containers is not None]
    return Capacity(max(cpus, default=None), max(memories, default=None),
                    max(containers, default=None))


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
    loads = _Loads({v.node.name: v for v in micro})
    new: list[tuple[str, ResolvedService]] = []
    for name, sandbox in sorted(sandboxes.items()):
        for service in sandbox.deployed_services():
            kept = _keep(world, micro, loads, sandbox=name, service=service,
                         previous=before.get((name, service.name)),
                         running=running.get(world.names.container(name, service.name), []))
            if kept is None:
                new.append((name, service))
            elif isinstance(kept, Problem):
                problems.append(kept)
            else:
                placements[(name, service.name)] = kept
                loads.add(kept.node, Need.of(service.resources))
    for name, service in new:
        placed = _place_new(micro, loads, sandbox=name, service=service)
        if isinstance(placed, Problem):
            problems.append(placed)
        else:
            placements[(name, service.name)] = placed
            loads.add(placed.node, Need.of(service.resources))
    for name, sandbox in sorted(sandboxes.items()):
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


def _keep(
    world: World, candidates: list[NodeView], loads: _Loads, *, sandbox: str,
    service: ResolvedService, previous: str | None, running: list[str],
) -> Placement | Problem | None:
    """Where a service stays (pinned, unreachable, or running where it is served); None: it
    needs a node (new, or its node no longer serves it)."""
    repository, location = service.name, service.origin
    if service.spec.node is not None and service.spec.node in world.nodes \
            and world.nodes[service.spec.node].node.drained:
        return Problem(location, f"services.{service.name}.node",
                       f"node {service.spec.node} is drained, and this service is pinned to "
                       "it: pin it to another node or remove the pin")
    if service.spec.node is not None or (previous is not None and any(
            v.node.name == previous and not v.reachable for v in candidates)):
        return _place_one(world, candidates, sandbox=sandbox, service=service.name,
                          repository=repository, pinned=service.spec.node,
                          kind=RepositoryKind.GO, location=location, previous=previous,
                          running=running)
    serving = {v.node.name for v in loads.serving_go(repository)}
    preferred = [previous] if previous in running else running
    for node in preferred:
        if node in serving and not world.nodes[node].node.drained:
            return Placement(sandbox, service.name, node, repository, location)
    if not running and previous in serving and world.nodes[previous].node.accepts_new:
        return Placement(sandbox, service.name, previous, repository, location)
    return None


def _place_new(candidates: list[NodeView], loads: _Loads, *, sandbox: str,
               service: ResolvedService) -> Placement | Problem:
    repository, location = service.name, service.origin
    serving = loads.serving_go(repository)
    if not serving:
        return _nowhere(candidates, repository, RepositoryKind.GO, location,
                        f"services.{service.name}")
    open_nodes = loads.open_go(repository)
    if not open_nodes:
        return Problem(location, f"services.{service.name}",
                       f"every MICRO node serving {repository!r} is cordoned or drained "
                       f"({', '.join(v.node.name for v in serving)}): uncordon one in "
                       "nodes.yaml or pin the service to a node with 'node:'")
    need = Need.of(service.resources)
    best = loads.best(open_nodes, need)
    if best is None:
        return Problem(location, f"services.{service.name}",
                       f"no MICRO node serving {repository!r} has room for it "
                       f"(cpu {need.cpu}m, memory {need.memory} bytes): raise a node's "
                       "capacity in nodes.yaml, add a node, or lower its resources")
    return Placement(sandbox, service.name, best, repository, location)


def _nowhere(candidates: list[NodeView], repository: str, kind: RepositoryKind,
             location: Location, path: str) -> Problem:
    kind_name = "MICRO" if kind is RepositoryKind.GO else "GATEWAY"
    unreachable = [v.node.name for v in candidates if not v.reachable]
    served = sorted({r for v in candidates for r, info in v.repositories.items()
                     if info.kind is kind})
    detail = f"served: {', '.join(served)}" if served else "they serve none"
    if unreachable:
        detail += f"; unreachable, so unknown: {', '.join(unreachable)}"
    return Problem(location, path, f"no {kind_name} node serves a {kind.value} repository "
                                   f"named {repository!r} ({detail})")


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
        return _nowhere(candidates, repository, kind, location, path)
    running = running or []
    preferred = [previous] if previous in running else running
    kept = next((v for n in preferred for v in serving if v.node.name == n), None)
    if kept is not None:
        return Placement(sandbox, service, kept.node.name, repository, location)
    open_nodes = [v for v in serving if v.node.accepts_new]
    if not open_nodes:
        return Problem(location, path, f"every {kind_name} node serving {repository!r} is "
                                       "cordoned: uncordon one in nodes.yaml")
    return Placement(sandbox, service, open_nodes[0].node.name, repository, location)
