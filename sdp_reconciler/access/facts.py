"""What the judge is told about a range of commits: plain frozen values, gathered by
``gitrange`` from the repository (or written by hand in a test)."""

from __future__ import annotations

from collections.abc import Mapping

from msgspec import Struct, field

from sdp_reconciler.access.changes import Requirement
from sdp_reconciler.access.model import AccessFile


class AccessVersion(Struct, frozen=True):
    """access.yaml in one commit: absent, valid (``model``) or present but invalid."""

    present: bool = False
    model: AccessFile | None = None


class CommitFacts(Struct, frozen=True):
    sha: str
    parents: tuple[str, ...]
    author: str
    diffs: tuple[tuple[Requirement, ...], ...]
    """what the commit changes against each parent, in order (a root commit: one, against
    nothing)"""
    access: AccessVersion


class SandboxUse(Struct, frozen=True):
    """What a sandbox at HEAD depends on besides its own file."""

    templates: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()


class RangeFacts(Struct, frozen=True):
    base: str | None
    head: str
    base_access: AccessVersion
    commits: tuple[CommitFacts, ...]
    """the range, parents before children"""
    usage: Mapping[str, SandboxUse]
    """every sandbox at HEAD"""
    worktree: tuple[Requirement, ...] | None = None
    """uncommitted changes (None: not checked)"""
    worktree_access: bool = False
    """the state directory holds an access.yaml"""
    outside: Mapping[str, tuple[Requirement, ...]] = field(default_factory=dict)
    """for each parent of a commit of the range that is outside the range but is not BASE:
    what it changes against BASE (its values that are not BASE's)"""
