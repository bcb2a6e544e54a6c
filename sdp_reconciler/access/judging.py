"""Judge a range of state commits: facts in, ``AccessDecision`` out. Pure.

The facts (``RangeFacts``) are gathered by ``gitrange``: each commit's author, parents, the
access.yaml it holds and what it changes against each parent (``changes.requirements``). The
rules:

* **Which access.yaml judges a commit**: the one in force after its first parent — never the
  commit's own, so nobody grants themselves a right in the commit that uses it. The rules in
  force after a commit are its access.yaml only when every change of that file up to it was
  authorised; an unauthorised edit of access.yaml never takes effect. A parent outside the range
  (BASE, or an old commit a side branch forked from) stands for BASE's rules: BASE is trusted,
  and a branch forked before a role was taken away is still judged by today's rules.
* **Without access.yaml** every change is allowed, except that introducing access.yaml is
  judged by the trust start (``identity.trust_start_problem``); removing it is then allowed.
* **Merges** are judged only for what they change themselves (an aspect that differs from every
  parent, e.g. a conflict resolution); the changes they bring in were judged in their own
  commits, so merging a pull request does not authorise it.
* **Provenance** (``provenance.py``): for every aspect of every file, the last change that
  decided its value at HEAD. A refused change is *in effect* while it is that last change.
* **Effects** (``effects.py``): what a refusal in effect holds (a sandbox, the users of a
  template or environment) or halts (the installation's files).
* **Uncommitted** changes in the state directory (but ports.yaml, which the reconciler writes)
  are refused whenever access.yaml is in force or in the directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from msgspec import Struct

from sdp_reconciler.access.changes import WHOLE_FILE, FileKind, Requirement
from sdp_reconciler.access.decision import UNCOMMITTED, AccessDecision, ChangeVerdict, CommitAccess
from sdp_reconciler.access.effects import decide
from sdp_reconciler.access.facts import AccessVersion, CommitFacts, RangeFacts
from sdp_reconciler.access.identity import (
    Identity,
    SignatureFacts,
    identify,
    trust_start_problem,
)
from sdp_reconciler.access.model import ACCESS_FILE, AccessFile, Permission, Role
from sdp_reconciler.access.permissions import granting_role
from sdp_reconciler.access.provenance import (
    Provenance,
    apply,
    group,
    own_and_inherited,
    refused,
    source,
)

__all__ = ["AccessVersion", "CommitFacts", "RangeFacts", "judge", "refusal_line"]

Signatures = Callable[[str], SignatureFacts]


# --- the rules in force -------------------------------------------------------------------------


class Open(Struct, frozen=True):
    """No access.yaml: everything is allowed."""


class Enforced(Struct, frozen=True):
    access: AccessFile


class Untrusted(Struct, frozen=True):
    """access.yaml exists but trust never started: nothing is authorised."""

    reason: str


Policy = Open | Enforced | Untrusted


def _policy_name(policy: Policy) -> str:
    match policy:
        case Open():
            return "none"
        case Enforced():
            return "access.yaml"
        case Untrusted():
            return "untrusted"


def _base_policy(facts: RangeFacts) -> Policy:
    version = facts.base_access
    if not version.present:
        return Open()
    if version.model is None:
        where = facts.base[:7] if facts.base else "the base"
        return Untrusted(f"access.yaml at {where} is not valid")
    return Enforced(version.model)


# --- judging one change ---------------------------------------------------------------------------


def refusal_line(commit: str, identity: Identity, requirement: Requirement,
                 reason: str | None) -> str:
    who = UNCOMMITTED if commit == UNCOMMITTED else \
        f"commit {commit[:7]} by {identity.email} ({identity.roles_text})"
    head = f"{who}: {requirement.file.path}: {requirement.permission}"
    if reason is None:
        return f"{head} is not granted to {' or '.join(identity.roles)}"
    return f"{head} is not granted: {reason}"


def _verdict(commit: str, identity: Identity, requirement: Requirement, *, role: Role | None,
             refusal: str | None) -> ChangeVerdict:
    return ChangeVerdict(
        commit=commit, author=identity.email, user=identity.user, file=requirement.file.path,
        aspect=requirement.aspect, permission=requirement.permission,
        description=requirement.description, sandbox=requirement.sandbox, role=role,
        refusal=refusal,
    )


def _judge_enforced(commit: str, access: AccessFile, identity: Identity,
                    requirement: Requirement) -> ChangeVerdict:
    if identity.problem is not None:
        line = refusal_line(commit, identity, requirement, identity.problem)
        return _verdict(commit, identity, requirement, role=None, refusal=line)
    role = granting_role(access, identity.roles, requirement.permission)
    refusal = None if role is not None else refusal_line(commit, identity, requirement, None)
    return _verdict(commit, identity, requirement, role=role, refusal=refusal)


def _judge_introduction(commit: CommitFacts, requirement: Requirement,
                        signatures: Signatures) -> ChangeVerdict:
    """The trust start: access.yaml added (or changed while no rules are in force)."""
    introduced = commit.access.model
    needs_signature = introduced is not None and introduced.require_signed_commits
    signature = signatures(commit.sha) if needs_signature else None
    problem = trust_start_problem(introduced, commit.author, signature)
    user = introduced.user_for_email(commit.author) if introduced is not None else None
    roles = tuple(introduced.users[user].roles) if introduced is not None and user else ()
    identity = Identity(commit.author, user, roles, problem, "")
    line = None if problem is None else refusal_line(commit.sha, identity, requirement, problem)
    return _verdict(commit.sha, identity, requirement,
                    role=Role.ADMIN if problem is None else None, refusal=line)


def _judge_commit(commit: CommitFacts, policy: Policy, own: Sequence[Requirement],
                  signatures: Signatures) -> tuple[Identity, list[ChangeVerdict]]:
    match policy:
        case Enforced(access=access):
            signature = signatures(commit.sha) if access.require_signed_commits else None
            identity = identify(access, commit.author, signature)
            return identity, [_judge_enforced(commit.sha, access, identity, r) for r in own]
        case Open():
            identity = Identity(commit.author, None, (), None, "not required")
            verdicts = []
            for requirement in own:
                if requirement.file.kind is FileKind.ACCESS and commit.access.present:
                    verdicts.append(_judge_introduction(commit, requirement, signatures))
                else:
                    verdicts.append(_verdict(commit.sha, identity, requirement, role=None,
                                             refusal=None))
            return identity, verdicts
        case Untrusted(reason=reason):
            identity = Identity(commit.author, None, (), reason, "not checked",
                                label="access.yaml untrusted")
            verdicts = []
            for requirement in own:
                if requirement.file.kind is FileKind.ACCESS:
                    verdicts.append(
                        _judge_introduction(commit, requirement, signatures)
                        if commit.access.present
                        else _verdict(commit.sha, identity, requirement, role=None, refusal=None)
                    )
                    continue
                line = refusal_line(commit.sha, identity, requirement, reason)
                verdicts.append(_verdict(commit.sha, identity, requirement, role=None,
                                         refusal=line))
            return identity, verdicts


def _whole_access(own: Sequence[Requirement], *, present: bool) -> list[Requirement]:
    """Without rules in force, a change of access.yaml is judged whole: as an introduction
    (``present``: the file exists after the change) or a removal."""
    access = [r for r in own if r.file.kind is FileKind.ACCESS]
    if not access:
        return list(own)
    what = "introduces access.yaml" if present else "removes access.yaml"
    whole = Requirement(access[0].file, WHOLE_FILE, Permission.MANAGE_ACCESS, what)
    return [r for r in own if r.file.kind is not FileKind.ACCESS] + [whole]


# --- the rules after a commit -------------------------------------------------------------------


def _policy_after(policy: Policy, commit: CommitFacts, provenance: Provenance) -> Policy:
    culprits = [source(record) for (file, _), record in sorted(provenance.items())
                if file == ACCESS_FILE and refused(record)]
    if culprits:
        if isinstance(policy, Enforced):
            return policy
        if not commit.access.present:
            return Open()
        return Untrusted(
            f"access.yaml was introduced by commit {culprits[0][:7]}, which it does not "
            "trust; nothing is authorised until an ADMIN it names commits it again or it is "
            "removed"
        )
    if not commit.access.present:
        return Open()
    if commit.access.model is None:
        return policy if isinstance(policy, Enforced) else Untrusted("access.yaml is not valid")
    return Enforced(commit.access.model)


# --- the range ------------------------------------------------------------------------------------


def judge(facts: RangeFacts, signatures: Signatures) -> AccessDecision:
    base_policy = _base_policy(facts)
    policies: dict[str, Policy] = {}
    provenance: dict[str, Provenance] = {}
    commits: list[CommitAccess] = []
    enforced = not isinstance(base_policy, Open)
    for commit in facts.commits:
        first = commit.parents[0] if commit.parents else None
        policy = policies.get(first, base_policy) if first is not None else base_policy
        enforced = enforced or not isinstance(policy, Open)
        own, inherited = own_and_inherited(commit, provenance, facts.outside)
        if not isinstance(policy, Enforced):
            own = _whole_access(own, present=commit.access.present)
        identity, verdicts = _judge_commit(commit, policy, own, signatures)
        provenance[commit.sha] = apply(inherited, group(verdicts))
        policies[commit.sha] = _policy_after(policy, commit, provenance[commit.sha])
        commits.append(CommitAccess(
            commit=commit.sha, parents=commit.parents, author=commit.author, user=identity.user,
            roles=identity.roles, signature=identity.signature, policy=_policy_name(policy),
            changes=tuple(verdicts),
        ))
    final = policies.get(facts.head, base_policy)
    at_head = provenance.get(facts.head, {})
    uncommitted: list[ChangeVerdict] = []
    if facts.worktree is not None:
        in_force = not isinstance(final, Open) or facts.worktree_access
        enforced = enforced or in_force
        uncommitted = _judge_worktree(facts.worktree, final, in_force=in_force,
                                      present=facts.worktree_access)
        at_head = apply(at_head, group(uncommitted))
    enforced = enforced or not isinstance(final, Open)
    rules = final.access if isinstance(final, Enforced) else None
    return decide(facts, commits, uncommitted, at_head, rules, enforced=enforced)


def _judge_worktree(changes: Sequence[Requirement], final: Policy, *, in_force: bool,
                    present: bool) -> list[ChangeVerdict]:
    identity = Identity(UNCOMMITTED, None, (), None, "")
    reason = "changes not committed are never authorised while access.yaml is in force"
    own = list(changes) if isinstance(final, Enforced) else _whole_access(changes, present=present)
    return [
        _verdict(UNCOMMITTED, identity, r, role=None,
                 refusal=refusal_line(UNCOMMITTED, identity, r, reason) if in_force else None)
        for r in own
    ]


