"""Provenance: for every aspect of every file, the change that decided its value. Pure.

A commit's provenance maps (file, aspect) to a *record*: the verdicts of the commit of the range
that last changed that aspect, or ``Stale``. No entry means the value is BASE's (trusted). The
rules:

* a commit's records replace its parent's; a whole-file change (added, removed, unreadable)
  replaces every record of that file;
* a parent outside the range other than BASE (an old commit a side branch forked from, or
  that a crafted merge names) is trusted only where it equals BASE: each aspect where it
  differs is ``Stale``, a value nobody in the range made;
* through a merge, an aspect keeps the record of a parent whose value the merge kept (BASE's
  value first, then an authorised change, then a refused one); an aspect that differs from
  every parent, or whose only source is a ``Stale`` value, is the merge's own change and is
  judged as the merge's;
* a refused or ``Stale`` record still present at HEAD is a refusal *in effect*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from msgspec import Struct

from sdp_reconciler.access.changes import WHOLE_FILE, Requirement
from sdp_reconciler.access.decision import ChangeVerdict
from sdp_reconciler.access.facts import CommitFacts

Key = tuple[str, str]


class Stale(Struct, frozen=True):
    """An aspect whose value comes from a commit outside the range and differs from BASE's."""

    source: str
    """the commit outside the range the value comes from"""
    requirements: tuple[Requirement, ...]
    """what changing BASE's value into this one needs"""


Record = tuple[ChangeVerdict, ...] | Stale
Provenance = dict[Key, Record]


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


def refused(record: Record) -> bool:
    return isinstance(record, Stale) or any(not v.allowed for v in record)


def source(record: Record) -> str:
    """The commit a record's value comes from."""
    return record.source if isinstance(record, Stale) else record[0].commit


def outside(sha: str, against_base: Sequence[Requirement]) -> Provenance:
    """The provenance of a commit outside the range: Stale wherever it differs from BASE."""
    grouped: dict[Key, list[Requirement]] = {}
    for requirement in against_base:
        grouped.setdefault(requirement.key, []).append(requirement)
    return {key: Stale(sha, tuple(reqs)) for key, reqs in grouped.items()}


def _rank(record: Record | None) -> int:
    if record is None:
        return 0  # BASE's value
    if isinstance(record, Stale):
        return 3
    return 2 if refused(record) else 1


def own_and_inherited(
    commit: CommitFacts, provenance: Mapping[str, Provenance],
    outside_base: Mapping[str, Sequence[Requirement]],
) -> tuple[list[Requirement], Provenance]:
    """A commit's own changes, and the provenance it inherits from its parents.

    ``provenance`` holds the commits of the range judged so far (parents come first);
    ``outside_base`` is, for each parent outside the range but BASE, what it changes
    against BASE."""

    def of(parent: str) -> Provenance:
        if parent in provenance:
            return provenance[parent]
        return outside(parent, outside_base.get(parent, ()))

    if len(commit.parents) <= 1:
        before = of(commit.parents[0]) if commit.parents else {}
        return list(commit.diffs[0]), dict(before)
    exact: list[dict[Key, list[Requirement]]] = []
    for diff in commit.diffs:
        by_key: dict[Key, list[Requirement]] = {}
        for requirement in diff:
            by_key.setdefault(requirement.key, []).append(requirement)
        exact.append(by_key)
    whole = [{r.file.path: r for r in diff if r.whole_file} for diff in commit.diffs]

    def covers(index: int, key: Key) -> bool:
        return key in exact[index] or key[0] in whole[index]

    def changes(key: Key) -> list[Requirement]:
        """The requirements of the merge's own change of ``key`` (against the first parent
        that differs)."""
        for index in range(len(commit.parents)):
            if key in exact[index]:
                return exact[index][key]
            if key[0] in whole[index]:
                return [whole[index][key[0]]]
        return []

    parents = [of(p) for p in commit.parents]
    keys = {k for diff in exact for k in diff} | {k for p in parents for k in p}
    own: list[Requirement] = []
    inherited: Provenance = {}
    for key in sorted(keys):
        kept = [parents[i].get(key) for i in range(len(parents)) if not covers(i, key)]
        best = min(kept, key=_rank) if kept else None
        if not kept or (isinstance(best, Stale) and changes(key)):
            own += [r for r in changes(key) if r not in own]
        elif best is not None:
            inherited[key] = best
    return own, inherited
