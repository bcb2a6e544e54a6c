"""A sandbox's route table, built once: what the gateway writes and what the services are told.

For every key the gateway routes (the ``<key>_url`` entries of its commit's config.php, plus
the sandbox's own services), one ``Route`` says where it goes: a service deployed in the
sandbox (``sandbox``), the OCP value the gateway's commit carries (``ocp``), or an explicit
``target``. The gateway's route values and the ``<SERVICE>_URL`` variables of the sandbox's
containers are both read from this one value, so they cannot disagree:

* the gateway reaches a sandbox service at its published port on its node
  (``http://{node address}:{port}``), the OCP value, or the target;
* a container on the same node (so on the same sandbox network) reaches a sandbox service by
  Docker DNS, through the service's network alias (``http://payment:8080``); a container on
  another node uses the gateway's URL; OCP values and targets are the same for everyone.

Pure functions and values.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from msgspec import Struct

from sdp_reconciler.state.locations import Location
from sdp_reconciler.state.servicevars import DEFAULT_VARIABLE, variable_name


class RouteKind(StrEnum):
    SANDBOX = "sandbox"
    """to the sandbox's own deployment of the service"""
    OCP = "ocp"
    """the gateway commit's own value (the shared OCP deployment)"""
    TARGET = "target"
    """to a URL the state names"""


class Route(NamedTuple):
    """One key of the table (a NamedTuple: thousands are made per pass)."""

    key: str
    kind: RouteKind
    url: str | None
    """what the gateway is given: the published port, the target, or the OCP value (None when
    the gateway's commit is unknown this pass)"""
    node: str | None = None
    """for a sandbox service: the node it runs on"""
    internal: str | None = None
    """for a sandbox service: its Docker DNS URL on its sandbox network"""
    declared: bool = True
    """False for a key the sandbox does not mention (it stays on the commit's own value)"""
    origin: Location | None = None
    """where the sandbox names the key (None when it does not)"""

    def url_from(self, node: str) -> str | None:
        """The URL a container of the sandbox running on ``node`` uses for this key."""
        if self.internal is not None and self.node == node:
            return self.internal
        return self.url


class RouteTable(Struct, frozen=True):
    routes: tuple[Route, ...]
    """sorted by key"""

    def get(self, key: str) -> Route | None:
        return next((r for r in self.routes if r.key == key), None)

    def variables(self, node: str, pattern: str | None) -> dict[str, str]:
        """``<SERVICE>_URL`` -> URL, for a container of the sandbox on ``node``; none when the
        installation turned the variables off (``pattern`` None)."""
        if pattern is None:
            return {}
        found: dict[str, str] = {}
        for route in self.routes:
            url = route.url_from(node)
            if url is not None:
                found[variable_name(pattern, route.key)] = url
        return found


__all__ = ["DEFAULT_VARIABLE", "Route", "RouteKind", "RouteTable"]
