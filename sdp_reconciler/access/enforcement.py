"""access.yaml enforced in a pass: what is held, whether the pass halts, what the audit credits.

The pass (``reconcile.prepare``) calls ``enforce`` before it places or plans anything:

* without an access.yaml in the state directory, and when no earlier pass enforced one, nothing
  is judged (reading the history would cost every pass) and the notice is said once;
* otherwise every commit between the last state commit a pass authorised (kept in the history
  as ``access.base``) and HEAD is judged, with the work tree's uncommitted changes
  (``authorize_range(..., check_worktree=True)``).

``Enforcement.held`` are the sandboxes to leave as they run; ``halted`` lines stop the whole
pass; ``problems`` turns the refusal lines into the plan's problems, at the sandbox's file, so
``plan``, ``--once``, ``status`` and the page show them where they show every other reason a
sandbox is left alone. After the pass ``record`` keeps ``next_base`` (the same base again while
a refusal is in effect, so a held change is judged again, not forgotten) and the roles in
force, which the page shows to the signed-in user.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from msgspec import Struct

from sdp_reconciler.access.notices import NOT_ENFORCED
from sdp_reconciler.state.locations import Location, Problem

if TYPE_CHECKING:  # the judging modules load only when a pass judges (start-up cost)
    from sdp_reconciler.access.decision import AccessDecision, Grant
    from sdp_reconciler.access.signatures import SignatureVerifier

BASE_KEY = "access.base"
"""history meta: the state commit the next pass judges from"""
ENFORCED_KEY = "access.enforced"
"""history meta: an access.yaml was in force (so its removal is judged too)"""
ROLES_KEY = "access.roles"
"""history meta: ``{user: [roles]}`` of the rules in force after the last pass, for the page"""


class MetaStore(Protocol):
    """The part of ``History`` this module uses."""

    def meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str | None) -> None: ...

    def add_refusal(self, *, sandbox: str, line: str, commit: str | None, permission: str,
                    runner: str) -> bool: ...


class Enforcement(Struct, frozen=True):
    decision: AccessDecision | None
    """None: nothing was judged (no access.yaml, none ever enforced)"""
    notes: tuple[str, ...] = ()
    """said once per pass: the notice without access.yaml, a base that had to be dropped"""

    @property
    def enforced(self) -> bool:
        return self.decision is not None and self.decision.enforced

    @property
    def halted(self) -> tuple[str, ...]:
        return self.decision.halted if self.decision is not None else ()

    @property
    def held(self) -> frozenset[str]:
        return self.decision.held if self.decision is not None else frozenset()

    def refusals_of(self, sandbox: str) -> tuple[str, ...]:
        if self.decision is None:
            return ()
        return self.decision.sandbox(sandbox).refusals

    def grant(self, sandbox: str, service: str | None) -> Grant | None:
        """The authorised change behind a sandbox's (service's) content, for its audit row."""
        if self.decision is None or not self.decision.enforced:
            return None
        return self.decision.sandbox(sandbox).grant_for(service)

    def problems(self, files: dict[str, str]) -> list[Problem]:
        """The refusal lines as problems: each held sandbox's at its own file (``files``:
        sandbox -> state file; a removed sandbox's file is named as it was), the halting
        ones at the file they are about."""
        out: list[Problem] = []
        if self.decision is None:
            return out
        for name in sorted(self.held):
            where = Location(files.get(name, f"sandboxes/{name}.yaml"))
            out += [Problem(where, "", line) for line in self.refusals_of(name)]
        about = {line: path for path, lines in self.decision.files.items() for line in lines}
        for line in self.halted:
            out.append(Problem(Location(about.get(line, "access.yaml")), "",
                               f"nothing is applied: {line}"))
        return out

    def everything_held(self, names: Iterable[str]) -> frozenset[str]:
        """What to leave as it runs: the held sandboxes, or every one when the pass halts."""
        return frozenset(names) | self.held if self.halted else self.held


def enforce(state_root: Path, *, has_access_file: bool, history: MetaStore | None,
            verifier: SignatureVerifier | None = None) -> Enforcement:
    """Judge the state commits since the last authorised one (see the module docstring).
    Raises ``AccessError`` when the state's history cannot be read: the pass applies nothing."""
    enforced_before = history is not None and history.meta(ENFORCED_KEY) == "1"
    if not has_access_file and not enforced_before:
        return Enforcement(decision=None, notes=(NOT_ENFORCED,))
    from sdp_reconciler.access.authorize import authorize_range
    from sdp_reconciler.access.gitrange import AccessError

    base = history.meta(BASE_KEY) if history is not None else None
    notes: list[str] = []
    try:
        decision = authorize_range(state_root, base, check_worktree=True, verifier=verifier)
    except AccessError:
        if base is None:
            raise
        # The recorded commit is gone (history rewritten and collected): judge from the root
        # commit, where the trust start applies, rather than trust an unknown range.
        notes.append(f"access: the last authorised state commit {base[:12]} is no longer in "
                     "the state's history; judging every commit from the root")
        decision = authorize_range(state_root, None, check_worktree=True, verifier=verifier)
    if decision.notice:
        notes.append(decision.notice)
    return Enforcement(decision=decision, notes=tuple(notes))


def record(history: MetaStore, enforcement: Enforcement) -> None:
    """After a pass that ran: where the next one judges from, and the roles now in force."""
    decision = enforcement.decision
    if decision is None:
        return
    history.set_meta(ENFORCED_KEY, "1" if decision.enforced else None)
    history.set_meta(BASE_KEY, decision.next_base)
    policy = decision.policy if decision.enforced else None
    roles = None if policy is None else json.dumps(
        {name: [str(r) for r in user.roles] for name, user in sorted(policy.users.items())})
    history.set_meta(ROLES_KEY, roles)


def audit_refusals(history: MetaStore, enforcement: Enforcement, *, runner: str) -> int:
    """An audit row for each refused change in effect (once per refusal line): the sandbox it
    holds (none for one that halts the pass), its commit and the permission it lacked."""
    decision = enforcement.decision
    if decision is None:
        return 0
    written = 0
    for verdict in decision.verdicts:
        if verdict.refusal is None or not verdict.outstanding:
            continue
        held = sorted(name for name in decision.held
                      if verdict.refusal in decision.sandbox(name).refusals)
        for sandbox in held or ([""] if verdict.refusal in decision.halted else []):
            written += history.add_refusal(
                sandbox=sandbox, line=verdict.refusal, commit=verdict.commit,
                permission=str(verdict.permission), runner=runner)
    return written


def roles_in_force(history: MetaStore, username: str) -> tuple[str, ...] | None:
    """The roles the last pass's rules give ``username``; None when no access.yaml is in force
    (every signed-in user may change everything)."""
    text = history.meta(ROLES_KEY)
    if text is None:
        return None
    roles = json.loads(text).get(username, [])
    return tuple(str(r) for r in roles)
