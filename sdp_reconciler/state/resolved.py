"""A sandbox as it is meant to run, templates applied: pure data the planner consumes.

Built by ``resolve.py`` from the loaded state; each part remembers where it was written, so
problems found later point at the right ``file:line:col``.
"""

from __future__ import annotations

from msgspec import Struct, field

from sdp_reconciler.state.locations import Location
from sdp_reconciler.state.models import DataEntry, GatewaySpec, Lifecycle, Resources, ServiceSpec


class ResolvedService(Struct, frozen=True):
    name: str
    spec: ServiceSpec
    environment: str | None
    resources: Resources | None
    origin: Location
    """Where this service's entry was written (the sandbox's file or a template's)."""


class ResolvedData(Struct, frozen=True):
    """One entry of the sandbox's merged ``data:`` (a database, Redis user or vhost)."""

    name: str
    entry: DataEntry
    origin: Location
    """Where this entry was written (the sandbox's file or a template's)."""


class ResolvedGateway(Struct, frozen=True):
    spec: GatewaySpec
    environment: str | None
    resources: Resources | None
    origin: Location


class ResolvedSandbox(Struct, frozen=True):
    name: str
    file: str
    """The sandbox file's display path (``state/sandboxes/QA-LOGIN-ERROR.yaml``)."""
    location: Location
    templates: tuple[str, ...]
    """Templates applied, most specific first."""
    gateway: ResolvedGateway | None
    services: dict[str, ResolvedService]
    environment: str | None
    resources: Resources | None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    data: dict[str, ResolvedData] = field(default_factory=dict)
    suspended_because: str | None = None
    """set when SDP stops the sandbox for a reason of its own (expiry)"""

    @property
    def suspended(self) -> bool:
        return self.lifecycle.suspended or self.suspended_because is not None

    @property
    def suspend_reason(self) -> str:
        return self.suspended_because or "sandbox suspended"

    def deployed_services(self) -> list[ResolvedService]:
        return [s for s in self.services.values() if s.spec.deployed]
