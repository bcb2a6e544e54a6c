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

import re
from dataclasses import dataclass

DEFAULT_VARIABLE = "{SERVICE}_URL"
"""the default name of the variables: ``PAYMENT_URL`` for key ``payment``"""

PLACEHOLDER = "{SERVICE}"


@dataclass(frozen=True)
class Route:
    key: str
    kind: str
    """"sandbox", "ocp" or "target\""""
    url: str | None
    """what the gateway is given: the published port, the target, or the OCP value (None when
    the gateway's commit is unknown this pass)"""
    node: str | None = None
    """for a sandbox service: the node it runs on"""
    internal: str | None = None
    """for a sandbox service: its Docker DNS URL on its sandbox network"""
    declared: bool = True
    """False for a key the sandbox does not mention (it stays on the commit's own value)"""

    def url_from(self, node: str) -> str | None:
        """The URL a container of the sandbox running on ``node`` uses for this key."""
        if self.internal is not None and self.node == node:
            return self.internal
        return self.url


@dataclass(frozen=True)
class RouteTable:
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


def variable_name(pattern: str, key: str) -> str:
    """``{SERVICE}_URL`` and ``payment-api`` -> ``PAYMENT_API_URL``."""
    return pattern.replace(PLACEHOLDER, re.sub(r"[^A-Za-z0-9]", "_", key).upper())


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot name the variables, or None."""
    if pattern.count(PLACEHOLDER) != 1:
        return f"{pattern!r} must contain {PLACEHOLDER} exactly once (e.g. {DEFAULT_VARIABLE!r})"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", pattern.replace(PLACEHOLDER, "X")):
        return (f"{pattern!r} does not give valid environment variable names: use letters, "
                f"digits, '_' and {PLACEHOLDER}, not starting with a digit")
    return None


__all__ = ["DEFAULT_VARIABLE", "Route", "RouteTable", "pattern_problem", "variable_name"]
