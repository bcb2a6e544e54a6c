"""What every container on the engine mounts, as one frozen value per container.

The workspace pruner (``prune.py``) must keep whatever any container mounts: running,
stopped or set aside, of this agent or of any other owner on the engine (``docker ps -a``).
``engine_mounts`` reads that list once and turns Docker's raw summaries into
``ContainerMounts``, so nothing past this module handles Docker's dicts. Docker's errors are
left to the caller (``prune.after_apply`` logs them and goes on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from msgspec import Struct


class ContainerMounts(Struct, frozen=True):
    """One container and the host paths it mounts."""

    name: str
    sources: tuple[str, ...]
    """each mount's source on the host (bind mounts and volumes' directories), as listed"""

    @classmethod
    def from_summary(cls, raw: Mapping[str, Any]) -> ContainerMounts:
        """From one entry of Docker's container list (``GET /containers/json``)."""
        names = raw.get("Names") or []
        name = str(names[0]).lstrip("/") if names else str(raw.get("Id", ""))[:12]
        sources = tuple(str(m["Source"]) for m in raw.get("Mounts") or [] if m.get("Source"))
        return cls(name=name, sources=sources)


class ContainerLister(Protocol):
    """The part of docker's low-level ``APIClient`` this module uses."""

    def containers(self, *, all: bool = ...) -> list[dict[str, Any]]: ...


class HasApi(Protocol):
    @property
    def api(self) -> ContainerLister: ...


def engine_mounts(engine: HasApi) -> list[ContainerMounts]:
    """Every container on the engine (any owner, any state) and what it mounts."""
    return [ContainerMounts.from_summary(raw) for raw in engine.api.containers(all=True)]


__all__ = ["ContainerMounts", "engine_mounts"]
