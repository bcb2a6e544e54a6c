"""A loaded state as values: each file's model with its source positions (``Document``) and
the whole directory (``LoadedState``).

Built by ``loading.py``; read by ``rules.py`` and ``resolve.py``, which ``loading`` runs, so
these values live apart from the loader (no import cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypeVar

from msgspec import Struct, field

from sdp_reconciler.access.model import AccessFile
from sdp_reconciler.state.models import (
    EnvironmentFile,
    Frozen,
    NodesFile,
    NotificationsFile,
    PortsFile,
    SandboxFile,
    TemplateFile,
)
from sdp_reconciler.state.resolved import ResolvedSandbox
from sdp_reconciler.state.sources import Location, SourceDoc
from sdp_reconciler.state.trust import HostRules, default_rules

M = TypeVar("M", bound=Frozen)


class Document(Struct, Generic[M], frozen=True):
    """A validated file: its model, its stem and where each of its values was written."""

    model: M
    stem: str
    source: SourceDoc
    path: Path
    """the file on disk"""

    def at(self, *path: str | int, key: bool = False) -> Location:
        return self.source.locate(tuple(path), key=key)


class LoadedState(Struct, frozen=True):
    """A whole, valid state directory."""

    root: Path
    nodes: Document[NodesFile]
    sandboxes: dict[str, Document[SandboxFile]]
    templates: dict[str, Document[TemplateFile]]
    environments: dict[str, Document[EnvironmentFile]]
    ports: Document[PortsFile] | None
    notifications: Document[NotificationsFile] | None = None
    access: Document[AccessFile] | None = None
    """access.yaml as the directory holds it; which rules are in force is decided over the
    commits (``sdp_reconciler.access.authorize``), not by this file alone"""
    unreadable: frozenset[tuple[str, str]] = frozenset()
    """(kind, stem) of files that failed to load: references to them are not reported again."""
    host: HostRules = field(default_factory=default_rules)
    """what the reconciler host allows this state: secret references, agent URLs"""
    resolved: Mapping[str, ResolvedSandbox] | None = None
    """every sandbox with its templates applied, resolved once by ``load_state`` (the rules
    check these values and the pass plans them); None in a state built by hand"""

    def display(self, relative: str) -> str:
        return display(self.root, relative)


def display(root: Path, relative: str) -> str:
    return str(root / relative) if str(root) not in ("", ".") else relative
