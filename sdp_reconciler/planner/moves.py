"""A service moved to another node (a drain, or its node stopped serving it). Pure.

The move is the zero-downtime switch across nodes: the new container starts on the target node
(health-gated by its agent, in the services phase), the gateway's route moves to the target
node's address and port (routes phase, only once that deploy succeeded), and only then does the
container on the old node drain and go (``DrainContainer`` in the cleanup phase, ``after`` the
deploy and the sandbox's route changes; when one of them failed, it is left serving for a later
pass). While the service does not run on its target node and no deploy there is planned (its
deploy there failed and is remembered), the old container keeps serving, its route keeps
pointing at it, and the plan says so in a note.

``holdover`` and ``drain_change`` decide; ``planning`` calls them where it plans routes and
removals, and ``hold_networks`` makes the removal of a sandbox network on the old node wait
for the same steps as the containers that leave it.
"""

from __future__ import annotations

from collections.abc import Iterable

from msgspec import Struct
from msgspec.structs import replace

from sdp_node.protocol import (
    LABEL_COMMIT,
    LABEL_PORT,
    DrainContainer,
    ObservedContainer,
    RepositoryKind,
)
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.plan import Action, Change, ChangeDetail, DetailKind, Phase, Subject
from sdp_reconciler.planner.world import World

__all__ = ["Holdover", "Running", "drain_change", "hold_networks", "holdover", "moved_reason",
           "running_index"]


class Holdover(Struct, frozen=True):
    """The container that keeps serving a service whose move has not happened yet."""

    node: str
    url: str


Running = dict[str, list[tuple[str, ObservedContainer]]]
"""container name -> (node, container) wherever it runs (not aside), nodes in name order"""


def running_index(world: World) -> Running:
    """Where each container of this installation runs, built once per plan."""
    found: Running = {}
    for name, view in sorted(world.nodes.items()):
        if view.observation is None:
            continue
        for observed in view.observation.containers:
            if not observed.aside and observed.state == "running":
                found.setdefault(observed.name, []).append((name, observed))
    return found


def _running_elsewhere(running: Running, container: str, target: str
                       ) -> tuple[str, ObservedContainer] | None:
    return next(((n, c) for n, c in running.get(container, ()) if n != target), None)


def _runs_on(running: Running, node: str, container: str) -> bool:
    return any(n == node for n, _c in running.get(container, ()))


def holdover(world: World, running: Running, *, placement: Placement, container: str,
             deploy_step: str | None) -> Holdover | None:
    """Where the service keeps being served while it does not run on its target node and no
    deploy there is planned this pass; None: no move is pending (not moved, or moving now)."""
    if deploy_step is not None or _runs_on(running, placement.node, container):
        return None
    found = _running_elsewhere(running, container, placement.node)
    if found is None:
        return None
    node, observed = found
    port = observed.labels.get(LABEL_PORT, "")
    if not port.isdigit():
        return None
    return Holdover(node, f"http://{world.nodes[node].node.address}:{port}")


def moved_reason(world: World, running: Running, placement: Placement,
                 container: str) -> str | None:
    """Why a service is created on its node when it runs on another: None when it does not."""
    found = _running_elsewhere(running, container, placement.node)
    if found is None:
        return None
    node = found[0]
    view = world.nodes.get(node)
    why = ""
    if view is not None and view.node.drained:
        why = f" (node {node} is drained)"
    elif view is not None and not view.serves(placement.repository, RepositoryKind.GO):
        why = f" (node {node} no longer serves {placement.repository})"
    return f"moved from node {node}{why}: starts here beside the old one, health-gated"


def drain_change(
    world: World, running: Running, *, container: ObservedContainer, node: str,
    sandbox: str, service: str, target: Placement, deploy_step: str | None,
) -> Change | None:
    """The drain of the container a move leaves on ``node``; None while the service does not
    run on its target node and no deploy there is planned (the old one keeps serving)."""
    if deploy_step is None and not _runs_on(running, target.node, container.name):
        return None
    view = world.nodes.get(node)
    drained = " (the node is drained)" if view is not None and view.node.drained else ""
    return Change(
        action=Action.REMOVE, subject=Subject.SERVICE, phase=Phase.CLEANUP, sandbox=sandbox,
        service=service, node=node, resource=container.name,
        reason=f"service moved to node {target.node}{drained}: this one drains and goes once "
        "the routes moved",
        step=DrainContainer(step_id=f"cleanup:{node}:{container.name}",
                            container=container.name),
        location=target.location, after=(deploy_step,) if deploy_step else (),
        detail=ChangeDetail(kind=DetailKind.REMOVAL,
                            previous_commit=container.labels.get(LABEL_COMMIT)),
    )


def hold_networks(changes: Iterable[Change]) -> list[Change]:
    """The changes, with each removal of a sandbox network waiting for whatever the drains of
    that sandbox's containers on that node wait for (a drain left for later keeps the network
    in use)."""
    changes = list(changes)
    waits: dict[tuple[str, str], tuple[str, ...]] = {}
    for change in changes:
        if isinstance(change.step, DrainContainer):
            key = (change.node, change.sandbox)
            waits[key] = tuple(dict.fromkeys(waits.get(key, ()) + change.after))
    if not waits:
        return changes
    out = []
    for change in changes:
        wait = waits.get((change.node, change.sandbox))
        if wait and change.subject is Subject.NETWORK and change.action is Action.REMOVE:
            change = replace(change, after=tuple(dict.fromkeys(change.after + wait)))
        out.append(change)
    return out
