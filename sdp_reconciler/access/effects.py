"""What the refusals in effect at HEAD mean for a pass: the ``AccessDecision``. Pure.

A refusal of a change to a sandbox file (or its port allocations) holds that sandbox; of a
template or an environment, every sandbox that uses it at HEAD; of nodes.yaml,
notifications.yaml, access.yaml (or ports.yaml as a whole), the whole pass. A ``Stale`` value
at HEAD (from a commit outside the range, not BASE's) is refused like a change nobody may
make. An authorised record behind a sandbox's content is a ``Grant`` for its audit rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgspec.structs import replace

from sdp_reconciler.access.changes import INSTALLATION_KINDS, FileKind, classify
from sdp_reconciler.access.decision import (
    AccessDecision,
    ChangeVerdict,
    CommitAccess,
    Grant,
    SandboxAccess,
)
from sdp_reconciler.access.facts import RangeFacts, SandboxUse
from sdp_reconciler.access.model import AccessFile
from sdp_reconciler.access.notices import NOT_ENFORCED
from sdp_reconciler.access.provenance import Provenance, Stale


def decide(facts: RangeFacts, commits: list[CommitAccess], uncommitted: list[ChangeVerdict],
            at_head: Provenance, policy: AccessFile | None, *, enforced: bool) -> AccessDecision:
    judged = [v for r in at_head.values() if not isinstance(r, Stale) for v in r]
    outstanding = {v.identity for v in judged}
    commits = [replace(c, changes=tuple(replace(v, outstanding=v.identity in outstanding)
                                        for v in c.changes)) for c in commits]
    uncommitted = [replace(v, outstanding=True) for v in uncommitted]
    stale = _stale(at_head)
    held: dict[str, list[str]] = {}
    grants: dict[str, list[Grant]] = {}
    files: dict[str, list[str]] = {}
    halted: list[str] = []
    order = {v.identity: i for i, v in enumerate(
        [v for c in commits for v in c.changes] + uncommitted)}
    in_effect = sorted(judged, key=lambda v: order[v.identity]) + stale
    for verdict in in_effect:
        concerned = _concerned(verdict, facts.usage)
        if verdict.refusal is None:
            for sandbox in concerned or []:
                grants.setdefault(sandbox, []).append(Grant(
                    commit=verdict.commit, author=verdict.author, user=verdict.user,
                    permission=verdict.permission, role=verdict.role, file=verdict.file,
                    aspect=verdict.aspect))
            continue
        _add(files, verdict.file, verdict.refusal)
        if concerned is None:
            if verdict.refusal not in halted:
                halted.append(verdict.refusal)
            continue
        for sandbox in concerned:
            _add(held, sandbox, verdict.refusal)
    touched = {v.sandbox for c in commits for v in c.changes if v.sandbox is not None}
    names = sorted(set(facts.usage) | set(held) | touched | {
        v.sandbox for v in uncommitted if v.sandbox is not None})
    sandboxes = {n: SandboxAccess(n, tuple(held.get(n, ())), tuple(grants.get(n, ())))
                 for n in names}
    clean = not held and not halted
    return AccessDecision(
        base=facts.base, head=facts.head, enforced=enforced,
        notice=None if enforced else NOT_ENFORCED, commits=tuple(commits),
        sandboxes=sandboxes, files={k: tuple(v) for k, v in sorted(files.items())},
        halted=tuple(halted), policy=policy, uncommitted=tuple(uncommitted),
        stale=tuple(stale), next_base=facts.head if clean else facts.base,
    )


def _stale(at_head: Provenance) -> list[ChangeVerdict]:
    """Refusals for HEAD's values that come from outside the range and differ from BASE's."""
    verdicts = []
    for (file, aspect), record in sorted(at_head.items()):
        if not isinstance(record, Stale):
            continue
        for requirement in record.requirements:
            line = (f"commit {record.source[:7]} (outside the range): {file}: "
                    f"{requirement.permission} is not granted: HEAD has this commit's {aspect}, "
                    "not BASE's, and no commit of the range makes that change")
            verdicts.append(ChangeVerdict(
                commit=record.source, author="", user=None, file=file, aspect=aspect,
                permission=requirement.permission, description=requirement.description,
                sandbox=requirement.sandbox, role=None, refusal=line, outstanding=True))
    return verdicts


def _add(table: dict[str, list[str]], key: str, line: str) -> None:
    lines = table.setdefault(key, [])
    if line not in lines:
        lines.append(line)


def _concerned(verdict: ChangeVerdict, usage: Mapping[str, SandboxUse]) -> list[str] | None:
    """The sandboxes a change is to; None when it is to the whole installation."""
    file = classify(verdict.file)
    assert file is not None
    if file.kind in INSTALLATION_KINDS:
        return None
    match file.kind:
        case FileKind.SANDBOX | FileKind.PORTS:
            return [verdict.sandbox] if verdict.sandbox is not None else None
        case FileKind.TEMPLATE:
            return sorted(n for n, use in usage.items() if file.stem in use.templates)
        case FileKind.ENVIRONMENT:
            return sorted(n for n, use in usage.items() if file.stem in use.environments)
    raise AssertionError(file.kind)  # pragma: no cover
