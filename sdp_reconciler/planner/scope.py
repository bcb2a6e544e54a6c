"""What started a pass and how far it reaches: ``Trigger``, ``Scope`` and ``Tracking``. Pure.

* ``Trigger``: why ``watch`` runs a pass (start, a state change, the interval, a webhook) and
  its ``Scope``; a burst of triggers ``coalesce`` into one: any full pass wins, else the
  scopes are united, so no push's sandbox is dropped.
* ``Scope``: the sandboxes a pass plans and the nodes it observes. A full pass has none (it
  plans everything); a scoped one leaves every other sandbox, and every other node, alone.
* ``Tracking``: what each sandbox tracked when it was last planned (repository, branch, the
  nodes its parts run on), built from a pass's placements. A push to ``repository@branch``
  becomes a scope over the sandboxes that track it, or nothing when none does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from msgspec import Struct, field

from sdp_node.naming import GATEWAY
from sdp_reconciler.planner.placement import Placement
from sdp_reconciler.planner.world import Allocation
from sdp_reconciler.state.models import PortAllocation
from sdp_reconciler.state.resolved import ResolvedSandbox


class Scope(Struct, frozen=True):
    """A pass limited to ``sandboxes``, observing only ``nodes``."""

    sandboxes: frozenset[str]
    nodes: frozenset[str]

    def __or__(self, other: Scope) -> Scope:
        return Scope(self.sandboxes | other.sandboxes, self.nodes | other.nodes)

    def allocations(self, planned: Iterable[Allocation],
                    existing: Iterable[PortAllocation]) -> list[Allocation]:
        """This pass's allocations for the scope's sandboxes, ``ports.yaml``'s for the rest
        (their nodes went unseen: nothing may be concluded about their ports)."""
        mine = [a for a in planned if a.sandbox in self.sandboxes]
        others = [Allocation(a.sandbox, a.service, a.node, a.port, a.allocated_at)
                  for a in existing if a.sandbox not in self.sandboxes]
        return sorted([*mine, *others], key=lambda a: (a.sandbox, a.service))

    def describe(self) -> str:
        return (f"sandboxes {', '.join(sorted(self.sandboxes))} on nodes "
                f"{', '.join(sorted(self.nodes))}")


class Trigger(Struct, frozen=True):
    """Why a pass runs. ``scope`` None: a full pass. ``sync``: fetch the state first."""

    kind: str
    """``start``, ``state``, ``interval``, ``webhook`` or ``stop``"""
    text: str
    scope: Scope | None = None
    sync: bool = True

    def describe(self) -> str:
        return self.text if self.scope is None else f"{self.text} ({self.scope.describe()})"


def coalesce(triggers: Iterable[Trigger]) -> Trigger:
    """One trigger for a burst: full when any is full, else the union of the scopes."""
    items = list(triggers)
    if not items:
        raise ValueError("nothing to coalesce")
    if len(items) == 1:
        return items[0]
    texts = list(dict.fromkeys(t.text for t in items))
    text = "; ".join(texts[:4]) + (f"; and {len(texts) - 4} more" if len(texts) > 4 else "")
    kinds = list(dict.fromkeys(t.kind for t in items))
    kind = kinds[0] if len(kinds) == 1 else "+".join(kinds)
    scopes = [t.scope for t in items]
    scope: Scope | None = None
    if all(s is not None for s in scopes):
        scope = Scope(frozenset(), frozenset())
        for one in scopes:
            assert one is not None
            scope = scope | one
    return Trigger(kind=kind, text=text, scope=scope, sync=any(t.sync for t in items))


class Tracked(Struct, frozen=True):
    """One deployed part of a sandbox as last planned."""

    sandbox: str
    repository: str
    branch: str | None
    """None when the part is pinned to a commit: a push never moves it"""
    node: str


class Tracking(Struct):
    """What every planned sandbox tracks; refreshed by each pass (``update``)."""

    parts: dict[str, list[Tracked]] = field(default_factory=dict)
    data_nodes: dict[str, set[str]] = field(default_factory=dict)
    """sandbox -> the INFRA nodes holding its data (observed with it: its plan needs them)"""
    known: bool = False
    """False until a full pass has filled it: before that, every push asks for a full pass"""

    def update(self, sandboxes: Mapping[str, ResolvedSandbox],
               placements: Mapping[tuple[str, str], Placement], *, full: bool,
               data_nodes: Iterable[tuple[str, str]] = ()) -> None:
        """Refresh from a pass: every sandbox (``full``) or the scope's; ``data_nodes`` are
        (sandbox, INFRA node) of the pass's data services."""
        data: dict[str, set[str]] = {}
        for sandbox_name, node in data_nodes:
            data.setdefault(sandbox_name, set()).add(node)
        fresh: dict[str, list[Tracked]] = {}
        for (name, service), placement in sorted(placements.items()):
            sandbox = sandboxes.get(name)
            if sandbox is None:
                continue
            if service == GATEWAY:
                spec = sandbox.gateway.spec if sandbox.gateway else None
                branch = spec.branch if spec and spec.commit is None else None
            else:
                entry = sandbox.services.get(service)
                branch = entry.spec.branch if entry and entry.spec.commit is None else None
            fresh.setdefault(name, []).append(
                Tracked(name, placement.repository, branch, placement.node))
        if full:
            self.parts, self.data_nodes = fresh, data
            self.known = True
        else:
            for name in sandboxes:
                self.parts[name] = fresh.get(name, [])
                self.data_nodes[name] = data.get(name, set())

    def repositories(self) -> set[str]:
        return {part.repository for parts in self.parts.values() for part in parts}

    def scope_for(self, repository: str, branches: Iterable[str]) -> Scope:
        """The sandboxes tracking ``repository`` at any of ``branches``, with all their
        nodes (a sandbox's gateway routes to its services: both ends are observed)."""
        moved = set(branches)
        names = frozenset(
            name for name, parts in self.parts.items()
            if any(p.repository == repository and p.branch in moved for p in parts)
        )
        nodes = frozenset(p.node for name in names for p in self.parts[name]) | frozenset(
            node for name in names for node in self.data_nodes.get(name, ()))
        return Scope(names, nodes)


__all__ = ["Scope", "Tracked", "Tracking", "Trigger", "coalesce"]
