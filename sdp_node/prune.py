"""Disk hygiene of a node's workspace: what no container uses goes, GOCACHE stays bounded.

Runs after each apply, in the agent's one worker thread, so no deploy sits between its checkout
or build and its container's start while it looks (``Converger.run`` calls ``after_apply``).
What it may delete, each entry a directory named for a commit:

* ``trees/<repository>/<commit>`` — Go source trees (mounted at ``/src``);
* ``builds/<repository>/<commit>`` — built binaries;
* ``gateways/<sandbox>/<commit>`` — gateway trees (one per sandbox and commit);
* leftovers of an interrupted checkout (``.<commit>.<id>.tmp`` beside them).

Kept, always: whatever any container on the engine mounts (running, stopped or set aside
during a replacement: a rollback to the old container needs its files), and anything changed
less than ``pruning.min_age_minutes`` ago. Kept besides, per repository: the
``pruning.keep_recent`` most recently made trees and builds (a rollback to one of them checks
out and builds nothing). A gateway tree holds its sandbox's edited route file, so one no
container mounts is of no use to a rollback (which writes its routes again): none is kept.

GOCACHE (``go_cache``, default ``<workspace>/gocache``) is emptied when it has grown past
``pruning.go_cache_max_mb``, as ``go clean -cache`` does; Go rebuilds what it needs, and the
module cache (what an offline build cannot fetch again) is never touched.

``decide`` is pure; ``after_apply`` reads the disk and the engine and never raises.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from sdp_node.config import NodeConfig, Pruning
from sdp_node.mounts import ContainerMounts

log = logging.getLogger("sdp_node")

MIB = 1 << 20
_RECENT_KEPT = ("trees", "builds")
"""the folders whose unused entries the ``keep_recent`` rule keeps"""
_FOLDERS = ("trees", "builds", "gateways")


class Entry(Struct, frozen=True):
    """One commit's directory under a workspace folder."""

    path: Path
    folder: str
    """``trees``, ``builds`` or ``gateways``"""
    group: str
    """the repository (trees, builds) or the sandbox (gateways) it belongs to"""
    modified: float
    """its mtime: when it was made (a checkout or build writes it once)"""

    @property
    def leftover(self) -> bool:
        """An interrupted checkout's staging directory."""
        return self.path.name.startswith(".")


class Pruned(Struct):
    """What one pruning removed."""

    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    go_cache_emptied_bytes: int | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.removed:
            parts.append(f"removed {len(self.removed)} unused tree(s)/build(s), "
                         f"{self.freed_bytes / MIB:.1f} MiB")
        if self.go_cache_emptied_bytes is not None:
            parts.append(f"emptied GOCACHE ({self.go_cache_emptied_bytes / MIB:.1f} MiB)")
        parts += self.errors
        return "; ".join(parts)


def decide(entries: Iterable[Entry], in_use: set[Path], settings: Pruning,
           now: float) -> list[Path]:
    """The entries to delete, in path order. Pure.

    ``in_use`` holds every path a container mounts and every parent of one: an entry there is
    kept, like one younger than ``min_age_minutes``; of the others, the ``keep_recent`` most
    recently made per repository are kept (trees and builds only).
    """
    young_after = now - settings.min_age_minutes * 60
    candidates: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        if entry.path in in_use or entry.modified > young_after:
            continue
        candidates.setdefault((entry.folder, entry.group), []).append(entry)
    doomed: list[Path] = []
    for (folder, _group), unused in candidates.items():
        finished = sorted((e for e in unused if not e.leftover),
                          key=lambda e: (e.modified, e.path.name), reverse=True)
        keep = settings.keep_recent if folder in _RECENT_KEPT else 0
        doomed += [e.path for e in finished[keep:]]
        doomed += [e.path for e in unused if e.leftover]
    return sorted(doomed)


def scan(workspace: Path) -> list[Entry]:
    """Every commit directory (and checkout leftover) under the workspace's folders."""
    found = []
    for folder in _FOLDERS:
        root = workspace / folder
        if not root.is_dir():
            continue
        for group in sorted(root.iterdir()):
            if not group.is_dir() or group.is_symlink():
                continue
            for entry in sorted(group.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    found.append(Entry(entry, folder, group.name, entry.lstat().st_mtime))
    return found


def mounted(containers: Iterable[ContainerMounts]) -> set[Path]:
    """Every mount source of ``containers`` and its parents."""
    paths: set[Path] = set()
    for container in containers:
        for source in container.sources:
            path = Path(source).resolve()
            paths.add(path)
            paths.update(path.parents)
    return paths


def size_of(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def _remove(path: Path) -> None:
    """Delete ``path``; the first read-only file (a tree's mode) does not stop it."""

    def writable_then_retry(function: Any, target: str, _error: Any) -> None:
        os.chmod(os.path.dirname(target), 0o700)
        function(target)

    shutil.rmtree(path, onerror=writable_then_retry)


def empty(folder: Path) -> None:
    """Remove everything inside ``folder``, keeping the folder itself."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            _remove(child)
        else:
            child.unlink()


def prune(config: NodeConfig, containers: Iterable[ContainerMounts],
          now: float | None = None) -> Pruned:
    """Delete what ``decide`` picks and empty GOCACHE when too large; report what went."""
    settings = config.pruning
    result = Pruned()
    workspace = config.workspace.resolve()
    entries = scan(workspace)
    for path in decide(entries, mounted(containers), settings,
                       time.time() if now is None else now):
        size = size_of(path)
        try:
            _remove(path)
        except OSError as e:
            result.errors.append(f"cannot remove {path}: {e}")
            continue
        result.removed.append(path)
        result.freed_bytes += size
        group = path.parent
        if group.is_dir() and not any(group.iterdir()):
            group.rmdir()
    go_cache = (config.go_cache or config.workspace / "gocache").resolve()
    if go_cache.is_dir():
        size = size_of(go_cache)
        if size > settings.go_cache_max_mb * MIB:
            try:
                empty(go_cache)
                result.go_cache_emptied_bytes = size
            except OSError as e:
                result.errors.append(f"cannot empty GOCACHE {go_cache}: {e}")
    return result


def after_apply(config: NodeConfig,
                list_all: Callable[[], Iterable[ContainerMounts]]) -> Pruned | None:
    """Prune when ``pruning.enabled``; ``list_all()`` lists every container on the engine
    and what it mounts (``mounts.engine_mounts``). Never raises: a failure is logged and the
    agent goes on."""
    if not config.pruning.enabled:
        return None
    try:
        result = prune(config, list_all())
    except Exception as e:  # hygiene must never break an apply
        log.warning("pruning the workspace failed: %s: %s", type(e).__name__, e)
        return None
    if result.removed or result.go_cache_emptied_bytes is not None or result.errors:
        log.info("pruning: %s", result.summary())
    return result
