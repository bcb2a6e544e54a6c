"""Keeping a repository's object store to a few packs, as git's automatic gc keeps a clone.

Every fetch stores what it brought as one more pack, and dulwich never merges them. Each open
of the store reads every pack's index, and each object lookup tries pack after pack, so a
fetch grew slower with every deploy, for as long as a node ran
(``bench/bench_store_packs.py`` compares the old path with this one and with git's CLI).

``merge_small_packs`` merges every pack but the largest into one, once there are more than
``LIMIT``; ``remove_packs`` then deletes the packs it replaced. The largest (usually the first
clone's) is left as it is, so a merge costs what was fetched since, not the repository's
size: the idea of ``git repack --geometric``.

Promises:

* nothing is lost: every object of the merged packs, reachable or not (a commit a force-push
  left behind may still be running), is in the new pack, written and indexed, before an old
  pack is removed;
* deltas between merged objects are kept; an object whose base stays in another pack is
  written whole, so the new pack needs no other;
* a pack with a ``.keep`` file is left alone;
* packs are removed only while the caller holds the store alone (``GitStore``): no reader
  or fetch has a pack open when it goes.
"""

from __future__ import annotations

import contextlib
import os

from dulwich.pack import Pack, generate_unpacked_objects
from dulwich.repo import Repo

LIMIT = 16
"""more packs than this and the small ones are merged (git's gc.autoPackLimit is 50)"""


def needs_consolidation(repo: Repo, *, limit: int = LIMIT) -> bool:
    return len(_mergeable(repo)) > limit


def merge_small_packs(repo: Repo, *, limit: int = LIMIT) -> list[str]:
    """Write one pack holding every object of every pack but the largest, when there are
    more than ``limit``. Returns the packs it replaces (their paths without ``.pack``), for
    ``remove_packs`` once no reader has the store open; [] when there was nothing to do.
    Adding a pack is safe beside readers: they find each object in one pack or the other."""
    packs = _mergeable(repo)
    if len(packs) <= limit:
        return []
    packs.sort(key=len)
    merged = packs[:-1]
    objects = {sha for pack in merged for sha in pack}
    store = repo.object_store
    records = generate_unpacked_objects(store, [(sha, None) for sha in objects],
                                        reuse_deltas=True)
    written = store.add_pack_data(len(objects), records)
    kept = _base(written) if written is not None else None
    return [base for base in map(_base, merged) if base != kept]  # same objects, same name


def remove_packs(bases: list[str]) -> None:
    """Delete the replaced packs; the caller holds the store alone."""
    for base in bases:
        for suffix in (".pack", ".idx", ".bitmap", ".rev"):  # the pack first: it is listed
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base + suffix)


def pack_count(repo: Repo) -> int:
    return len(repo.object_store.packs)


def _mergeable(repo: Repo) -> list[Pack]:
    return [pack for pack in repo.object_store.packs
            if not os.path.exists(_base(pack) + ".keep")]


def _base(pack: Pack) -> str:
    path = str(pack.index.path)  # type: ignore[attr-defined]  # a FilePackIndex's file
    assert path.endswith(".idx"), path
    return path[: -len(".idx")]


__all__ = ["LIMIT", "merge_small_packs", "needs_consolidation", "pack_count", "remove_packs"]
