"""Provenance: for every aspect of every file, the last change that decided its value. Pure.

A record is keyed by (file, aspect) and holds the verdicts of the one commit that last changed
that aspect. A commit's records replace its parent's; a whole-file change (added, removed,
unreadable) replaces every record of that file. Through a merge, an aspect keeps the record of
the parent whose value the merge kept (an authorised one when several parents agree); only an
aspect that differs from every parent is the merge's own change, judged as the merge's.
A refused record still present at HEAD is a refusal *in effect*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sdp_reconciler.access.changes import WHOLE_FILE, Requirement
from sdp_reconciler.access.decision import ChangeVerdict
from sdp_reconciler.access.facts import CommitFacts

Key = tuple[str, str]
Provenance = dict[Key, tuple[ChangeVerdict, ...]]


def group(verdicts: Iterable[ChangeVerdict]) -> Provenance:
    grouped: dict[Key, list[ChangeVerdict]] = {}
    for verdict in verdicts:
        grouped.setdefault((verdict.file, verdict.aspect), []).append(verdict)
    return {k: tuple(v) for k, v in grouped.items()}


def apply(provenance: Provenance, records: Provenance) -> Provenance:
    """``provenance`` after the changes ``records``: a whole-file change replaces the file."""
    replaced = {file for file, aspect in records if aspect == WHOLE_FILE}
    out = {k: v for k, v in provenance.items() if k[0] not in replaced}
    out.update(records)
    return out


def refused(record: tuple[ChangeVerdict, ...]) -> bool:
    return any(not v.allowed for v in record)


def own_and_inherited(commit: CommitFacts,
                       provenance: Mapping[str, Provenance]) -> tuple[list[Requirement],
                                                                      Provenance]:
    """A commit's own changes, and the provenance it inherits from its parents."""
    if len(commit.parents) <= 1:
        parent = commit.parents[0] if commit.parents else None
        before = provenance.get(parent, {}) if parent is not None else {}
        return list(commit.diffs[0]), dict(before)
    exact = [{r.key: r for r in diff} for diff in commit.diffs]
    whole = [{r.file.path for r in diff if r.whole_file} for diff in commit.diffs]

    def covers(index: int, key: Key) -> bool:
        return key in exact[index] or key[0] in whole[index]

    keys = {k for diff in exact for k in diff}
    own_keys = {k for k in keys if all(covers(i, k) for i in range(len(commit.parents)))}
    own = [r for k in sorted(own_keys)
           for r in next(d for d in commit.diffs if any(x.key == k for x in d)) if r.key == k]
    inherited: Provenance = {}
    parents = [provenance.get(p, {}) for p in commit.parents]
    for key in sorted({k for p in parents for k in p} | (keys - own_keys)):
        kept = [parents[i].get(key) for i in range(len(parents)) if not covers(i, key)]
        if not kept:
            continue
        trusted = [r for r in kept if r is None or not refused(r)]
        chosen = trusted[0] if trusted else kept[0]
        if chosen is not None:
            inherited[key] = chosen
    return own, inherited
