"""Which steps of one convergence plan must wait for which: the ordering rules as data.

The reconciler sends one plan per node and phase, its steps in a meaningful order; the agent
runs independent ones side by side (``sdp_node.pool``). This module decides, without touching
anything, which earlier steps each step waits for. Promises:

* two steps that touch the same container (``<name>``, ``<name>--next`` and
  ``<name>--previous`` count as one) or the same published port run in plan order: a
  service's switch before its retire, a remove before a deploy of the same name, and never
  two deploys on one port at once (the plan never gives one port to two containers; if it
  did, the second would find the port taken, as it would serially);
* a sandbox's network steps and route steps (``ensure_network``, ``remove_network``,
  ``deploy_gateway``, ``set_routes``) are **barriers** within their sandbox: they wait for
  every earlier step of the sandbox and every later step of it waits for them. So a
  sandbox's network comes before its containers, its gateway's routes after the services
  they point to, its removals after its routes moved and its network's removal after its
  containers went;
* a step of a kind the node does not run here (data steps on a MICRO node) waits for every
  earlier step and holds back every later one: it runs alone;
* steps of different sandboxes never wait for each other. Container names do not always say
  their sandbox (``sandbox-a-b-c`` could be sandbox ``a-b``'s service ``c`` or ``a``'s
  ``b-c``): a step that names only a container is taken as part of every sandbox whose
  network name prefixes it, which may order two unrelated steps but never lets related ones
  overlap;
* network creations form one **exclusive** group (``exclusive``): the agent makes one at a time
  (two would pick the same free subnet), so the pool runs them one at a time too and gives the
  other workers deploys meanwhile instead of leaving them waiting for a lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from msgspec import Struct

from sdp_node.naming import ResourceNames
from sdp_node.protocol import (
    ASIDE_SUFFIX,
    NEXT_SUFFIX,
    CaptureDatabase,
    DeployGateway,
    DeployService,
    DrainContainer,
    DropCapturedSource,
    DropDatabase,
    DropRabbitmqVhost,
    DropRedisUser,
    EnsureDatabase,
    EnsureNetwork,
    EnsureRabbitmqVhost,
    EnsureRedisUser,
    RecloneDatabase,
    RemoveContainer,
    RemoveNetwork,
    RetireContainer,
    SetRoutes,
    StartContainer,
    Step,
    StopContainer,
)


class Footprint(Struct, frozen=True):
    """What one step touches, as far as ordering goes."""

    containers: frozenset[str] = frozenset()
    """base container names (without ``--next`` / ``--previous``)"""
    ports: frozenset[int] = frozenset()
    sandbox_network: str | None = None
    """the network name of the step's sandbox, when the step names its sandbox"""
    barrier: bool = False
    """a network or route step: ordered with every step of its sandbox"""
    alone: bool = False
    """ordered with every step of the plan"""

    def in_sandbox(self, network: str) -> bool:
        """Whether this step may belong to the sandbox whose network is ``network``."""
        if self.sandbox_network is not None:
            return self.sandbox_network == network
        return any(c.startswith(network + "-") for c in self.containers)


def _base(container: str) -> str:
    return container.removesuffix(NEXT_SUFFIX).removesuffix(ASIDE_SUFFIX)


def footprint(step: Step, names: ResourceNames) -> Footprint:
    match step:
        case EnsureNetwork():
            return Footprint(sandbox_network=names.network(step.sandbox), barrier=True)
        case RemoveNetwork():
            return Footprint(sandbox_network=step.network, barrier=True)
        case DeployService():
            return Footprint(containers=frozenset({_base(step.spec.container)}),
                             ports=frozenset({step.spec.port}),
                             sandbox_network=names.network(step.spec.sandbox))
        case DeployGateway():
            return Footprint(containers=frozenset({_base(step.spec.container)}),
                             ports=frozenset({step.spec.port}),
                             sandbox_network=names.network(step.spec.sandbox), barrier=True)
        case SetRoutes():
            return Footprint(containers=frozenset({_base(step.container)}),
                             sandbox_network=names.network(step.sandbox), barrier=True)
        case StopContainer() | StartContainer() | RemoveContainer() | RetireContainer() \
                | DrainContainer():
            return Footprint(containers=frozenset({_base(step.container)}))
        case EnsureDatabase() | RecloneDatabase() | DropDatabase() | EnsureRedisUser() \
                | DropRedisUser() | EnsureRabbitmqVhost() | DropRabbitmqVhost() \
                | CaptureDatabase() | DropCapturedSource():
            return Footprint(alone=True)
        case _:
            assert_never(step)


def ordered(earlier: Footprint, later: Footprint) -> bool:
    """Whether ``later`` must wait for ``earlier`` (which comes first in the plan)."""
    if earlier.alone or later.alone:
        return True
    if earlier.containers & later.containers or earlier.ports & later.ports:
        return True
    for barrier, other in ((earlier, later), (later, earlier)):
        if barrier.barrier and barrier.sandbox_network is not None \
                and other.in_sandbox(barrier.sandbox_network):
            return True
    return False


NETWORKS = "networks"


def exclusive(step: Step) -> str | None:
    """The group of steps of which at most one runs at a time, if any."""
    return NETWORKS if isinstance(step, EnsureNetwork) else None


def _networks(found: Footprint) -> set[str]:
    """Every network ``n`` for which ``found.in_sandbox(n)`` holds: its own, or each prefix of
    a container name that ends before a ``-``."""
    if found.sandbox_network is not None:
        return {found.sandbox_network}
    return {c[:k] for c in found.containers for k, char in enumerate(c) if char == "-"}


def dependencies(steps: Sequence[Step], names: ResourceNames) -> list[frozenset[int]]:
    """For each step (by index), the indexes of the earlier steps it waits for: the earlier
    ``j`` for which ``ordered(j, i)`` holds, found through indexes by container, port and
    network instead of asking every pair (a first deploy of a big node is thousands of
    steps)."""
    by_container: dict[str, list[int]] = {}
    by_port: dict[int, list[int]] = {}
    members: dict[str, list[int]] = {}
    """network -> the earlier steps that may belong to its sandbox"""
    barriers: dict[str, list[int]] = {}
    """network -> the earlier barrier steps of its sandbox"""
    alone: list[int] = []
    out: list[frozenset[int]] = []
    for i, step in enumerate(steps):
        found = footprint(step, names)
        networks = _networks(found)
        if found.alone:
            waits: set[int] = set(range(i))
        else:
            waits = set(alone)
            for container in found.containers:
                waits.update(by_container.get(container, ()))
            for port in found.ports:
                waits.update(by_port.get(port, ()))
            for network in networks:
                waits.update(barriers.get(network, ()))
            if found.barrier and found.sandbox_network is not None:
                waits.update(members.get(found.sandbox_network, ()))
        out.append(frozenset(waits))
        if found.alone:
            alone.append(i)
        for container in found.containers:
            by_container.setdefault(container, []).append(i)
        for port in found.ports:
            by_port.setdefault(port, []).append(i)
        for network in networks:
            members.setdefault(network, []).append(i)
        if found.barrier and found.sandbox_network is not None:
            barriers.setdefault(found.sandbox_network, []).append(i)
    return out


__all__ = ["NETWORKS", "Footprint", "dependencies", "exclusive", "footprint", "ordered"]
