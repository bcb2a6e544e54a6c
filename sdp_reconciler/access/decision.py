"""The result of judging a range of state commits: frozen values, built once by ``judging``.

``AccessDecision`` is what the pass and ``sdp-reconcile authorize`` consume:

* ``commits``: per commit, its author, user, roles, how its signature was judged, and a
  ``ChangeVerdict`` per changed aspect and permission (allowed with the role that granted it,
  or refused with its refusal line);
* ``sandboxes``: per sandbox, whether what HEAD says about it is authorised, the refusal lines
  that hold it (its own file, a template or environment it uses, its port allocations) and the
  grants behind its current content (for the audit rows);
* ``files``: every file with a refusal still in effect at HEAD, with the lines;
* ``halted``: refusals that stop the whole pass (nodes.yaml, notifications.yaml, access.yaml,
  a failed trust start), so nothing is applied;
* ``policy``: the access.yaml in force after HEAD (an unauthorised edit never takes effect),
  which is what the page shows roles from.

A refusal is *in effect* (``outstanding``) while the refused change still decides HEAD's
content; a later change of the same aspect by someone who holds the permission (a revert, or
doing the change again) supersedes it. ``refusals`` lists every refused change of the range,
superseded or not: that is what ``authorize`` prints and what makes it exit 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgspec import Struct, field

from sdp_reconciler.access.model import AccessFile, Permission, Role

UNCOMMITTED = "uncommitted"


class ChangeVerdict(Struct, frozen=True):
    commit: str
    """the commit's full id, or ``uncommitted`` for the state directory's own edits"""
    author: str
    user: str | None
    file: str
    aspect: str
    permission: Permission
    description: str
    sandbox: str | None
    role: Role | None
    """the role that granted the permission (None: refused, or no access.yaml in force)"""
    refusal: str | None
    """the refusal line, or None when allowed"""
    outstanding: bool = False
    """the change still decides HEAD's content (it was not superseded)"""

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def identity(self) -> tuple[str, str, str, Permission]:
        return (self.commit, self.file, self.aspect, self.permission)


class CommitAccess(Struct, frozen=True):
    commit: str
    parents: tuple[str, ...]
    author: str
    user: str | None
    roles: tuple[Role, ...]
    signature: str
    policy: str
    """which rules judged it: 'access.yaml', 'none' (no access.yaml) or 'untrusted'"""
    changes: tuple[ChangeVerdict, ...]

    @property
    def allowed(self) -> bool:
        return all(c.allowed for c in self.changes)


class Grant(Struct, frozen=True):
    """An authorised change behind a sandbox's current content: for its audit rows."""

    commit: str
    author: str
    user: str | None
    permission: Permission
    role: Role | None
    file: str
    aspect: str


class SandboxAccess(Struct, frozen=True):
    name: str
    refusals: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()

    @property
    def authorised(self) -> bool:
        return not self.refusals

    def grant_for(self, service: str | None) -> Grant | None:
        """The latest grant concerning ``service`` (``gateway`` or a service name), else the
        latest grant of the sandbox at all; None when nothing in the range changed it."""
        if service is not None:
            prefix = "gateway" if service == "gateway" else f"services.{service}."
            for grant in reversed(self.grants):
                if grant.aspect == prefix or grant.aspect.startswith(prefix):
                    return grant
        return self.grants[-1] if self.grants else None


class AccessDecision(Struct, frozen=True):
    base: str | None
    head: str
    enforced: bool
    """access.yaml was in force somewhere in the range (or is in the work tree)"""
    notice: str | None
    """said once per pass when nothing is enforced"""
    commits: tuple[CommitAccess, ...] = ()
    sandboxes: Mapping[str, SandboxAccess] = field(default_factory=dict)
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    halted: tuple[str, ...] = ()
    policy: AccessFile | None = None
    uncommitted: tuple[ChangeVerdict, ...] = ()
    stale: tuple[ChangeVerdict, ...] = ()
    """HEAD's values that come from a commit outside the range and are not BASE's (history
    that does not contain BASE, or a merge naming an old commit): refused, in effect"""
    next_base: str | None = None
    """the base the next pass should check from: HEAD when nothing is refused in effect, else
    the same base again (so a held change is judged again, not forgotten)"""

    @property
    def refusals(self) -> tuple[str, ...]:
        """Every refusal line of the range and the work tree, in commit order, once each."""
        lines: list[str] = []
        for verdict in self.verdicts:
            if verdict.refusal is not None and verdict.refusal not in lines:
                lines.append(verdict.refusal)
        return tuple(lines)

    @property
    def verdicts(self) -> tuple[ChangeVerdict, ...]:
        return tuple(v for c in self.commits for v in c.changes) + self.uncommitted + self.stale

    @property
    def allowed(self) -> bool:
        """Every change of the range is allowed (what ``authorize`` exits 0 for)."""
        return not self.refusals

    @property
    def held(self) -> frozenset[str]:
        """Sandboxes to leave as they run."""
        return frozenset(name for name, s in self.sandboxes.items() if not s.authorised)

    def sandbox(self, name: str) -> SandboxAccess:
        return self.sandboxes.get(name) or SandboxAccess(name)
