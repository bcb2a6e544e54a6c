"""Port allocation: explicit ports honoured, the rest allocated, none ever given to two owners.

``allocate`` is pure. A (sandbox, service) keeps, in this order: the port its state file names;
the port its container is labelled with (``sdp.port``: where it serves now — a zero-drop
switch moves a service to a spare port of its node — and so a fresh CI clone without
``ports.yaml`` allocates nothing that is in use); its allocation in ``ports.yaml``; else the
lowest free port of its node's range. A port counts as used while any allocation, any container of
this installation or any explicit claim holds it. An allocation nobody wants any more is kept
until its node confirms the container is gone (the node is reachable and shows no container
for it): only then is the port free again.

``apply.portsfile`` writes the result to ``ports.yaml``; this module does no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sdp_node.naming import GATEWAY
from sdp_node.protocol import LABEL_PORT, LABEL_SANDBOX, LABEL_SERVICE
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.world import Allocation, World
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import PortAllocation
from sdp_reconciler.state.resolved import ResolvedSandbox

__all__ = ["NO_FREE_PORT", "Allocation", "allocate", "follow_switches", "release",
           "same_allocations"]

NO_FREE_PORT = "no free port left on node"
"""how the problem of a (sandbox, service) held back for want of a port begins"""


def _explicit(sandbox: ResolvedSandbox, service: str) -> int | None:
    if service == GATEWAY:
        return sandbox.gateway.spec.port if sandbox.gateway else None
    entry = sandbox.services.get(service)
    return entry.spec.port if entry else None


def _observed_ports(world: World) -> dict[tuple[str, str], tuple[str, int]]:
    """(sandbox, service) -> (node, port) from the labels of this installation's containers."""
    found: dict[tuple[str, str], tuple[str, int]] = {}
    for name, view in sorted(world.nodes.items()):
        if view.observation is None:
            continue
        for container in view.observation.containers:
            if container.aside:
                continue  # a switch's previous or unconfirmed instance: not where it lives
            labels = container.labels
            port = labels.get(LABEL_PORT, "")
            if port.isdigit() and LABEL_SANDBOX in labels and LABEL_SERVICE in labels:
                found[(labels[LABEL_SANDBOX], labels[LABEL_SERVICE])] = (name, int(port))
    return found


def allocate(
    *,
    sandboxes: dict[str, ResolvedSandbox],
    placements: dict[tuple[str, str], Placement],
    existing: Iterable[PortAllocation],
    world: World,
    now: datetime,
) -> tuple[list[Allocation], list[Problem]]:
    """All allocations after this pass (kept, recovered and new), and what could not be had."""
    previous = {
        (a.sandbox, a.service): Allocation(a.sandbox, a.service, a.node, a.port, a.allocated_at)
        for a in existing
    }
    observed = _observed_ports(world)
    # Where a service runs on two nodes (a move across nodes, not finished), the port it has
    # on its placement's node is the one that counts.
    observed_on: dict[tuple[str, str, str], int] = {}
    for name, view in sorted(world.nodes.items()):
        for container in view.observation.containers if view.observation else ():
            labels = container.labels
            label = labels.get(LABEL_PORT, "")
            if not container.aside and label.isdigit() and LABEL_SANDBOX in labels \
                    and LABEL_SERVICE in labels:
                observed_on[(labels[LABEL_SANDBOX], labels[LABEL_SERVICE], name)] = int(label)
    used: dict[str, set[int]] = defaultdict(set)
    for allocation in previous.values():
        used[allocation.node].add(allocation.port)
    for (_sandbox, _service, node), port in observed_on.items():
        used[node].add(port)
    for (sandbox, service), placement in placements.items():
        claimed = _explicit(sandboxes[sandbox], service)
        if claimed is not None:
            used[placement.node].add(claimed)

    result: dict[tuple[str, str], Allocation] = {}
    problems: list[Problem] = []
    cursor: dict[str, int] = {}
    for key in sorted(placements):
        sandbox, service = key
        node = placements[key].node
        explicit = _explicit(sandboxes[sandbox], service)
        kept = previous.get(key)
        here = observed_on.get((sandbox, service, node))
        seen = (node, here) if here is not None else observed.get(key)
        if explicit is not None:
            taken_by = next((other for other, (n, p) in sorted(observed.items())
                             if other != key and n == node and p == explicit), None)
            if taken_by is not None:
                problems.append(Problem(
                    placements[key].location, f"services.{service}.port"
                    if service != GATEWAY else "gateway.port",
                    f"port {explicit} on node {node} is held by the running container of "
                    f"sandbox {taken_by[0]!r} service {taken_by[1]!r}: pick another port",
                ))
                continue
            same = kept if kept and kept.node == node and kept.port == explicit else None
            result[key] = same or Allocation(sandbox, service, node, explicit, now)
        elif seen is not None and seen[0] == node:
            # The port it serves on: a switch moves a service to a spare port.
            same = kept if kept and kept.node == node and kept.port == seen[1] else None
            result[key] = same or Allocation(sandbox, service, node, seen[1], now)
        elif kept is not None and kept.node == node:
            result[key] = kept
        else:
            free = _lowest_free(world, node, used[node], cursor)
            if free is None:
                span = world.nodes[node].node.port_range()
                problems.append(Problem(
                    _own_location(sandboxes[sandbox], placements[key]),
                    f"services.{service}.port" if service != GATEWAY else "gateway.port",
                    f"{NO_FREE_PORT} {node} ({span.first}-{span.last}) for "
                    f"sandbox {sandbox!r} "
                    f"{'gateway' if service == GATEWAY else f'service {service!r}'}: "
                    "widen its range in nodes.yaml or remove unused sandboxes",
                ))
                continue
            used[node].add(free)
            result[key] = Allocation(sandbox, service, node, free, now)

    # Unwanted allocations stay until their node confirms the container is gone.
    for key, allocation in previous.items():
        if key in result:
            continue
        holder = world.nodes.get(allocation.node)
        confirmed_gone = holder is not None and holder.reachable and key not in observed
        if not confirmed_gone:
            result[key] = allocation
    return [result[k] for k in sorted(result)], problems


def _own_location(sandbox: ResolvedSandbox, placement: Placement) -> Location:
    """Where a sandbox's own problem is reported: its entry when the sandbox's file writes it,
    else the sandbox's file (a template's line would block every sandbox using the template,
    and name none of them)."""
    if placement.location.file == sandbox.file:
        return placement.location
    return sandbox.location


def _lowest_free(world: World, node: str, used: set[int], cursor: dict[str, int]) -> int | None:
    """The lowest port of the node's range not in ``used``. Ports are only ever added to
    ``used`` during one allocation, so the search resumes where the last one stopped."""
    span = world.nodes[node].node.port_range()
    for port in range(max(span.first, cursor.get(node, span.first)), span.last + 1):
        if port not in used:
            cursor[node] = port
            return port
    cursor[node] = span.last + 1
    return None


def release(allocations: list[Allocation], removed: set[tuple[str, str]]) -> list[Allocation]:
    """Allocations without those whose containers a node confirmed removed."""
    return [a for a in allocations if (a.sandbox, a.service) not in removed]


def follow_switches(allocations: list[Allocation], ports: dict[tuple[str, str], int], *,
           now: datetime) -> list[Allocation]:
    """Allocations moved to the ports their services were deployed on (a switch)."""
    out = []
    for allocation in allocations:
        port = ports.get((allocation.sandbox, allocation.service), allocation.port)
        out.append(allocation if port == allocation.port else Allocation(
            allocation.sandbox, allocation.service, allocation.node, port, now))
    return out


def same_allocations(a: Iterable[Allocation], b: Iterable[PortAllocation]) -> bool:
    def key(x: Allocation | PortAllocation) -> tuple[str, str, str, int]:
        return (x.sandbox, x.service, x.node, x.port)

    return sorted(map(key, a)) == sorted(map(key, b))
