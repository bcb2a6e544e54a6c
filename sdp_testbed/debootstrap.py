"""Debian bookworm root file systems made with debootstrap, cached as tarballs.

`cached_tarball(cache_dir, recipe)` returns `cache_dir/<name>-<hash>.tar`, building it first
when missing: `debootstrap --variant=minbase [--include=...] bookworm` into a scratch tree
(about 30-60 s; needs root and the Debian mirror), the recipe's adjustments, then a tar with
numeric owners, sorted names and no /dev, /proc or /sys content. Older tarballs of the same
name are removed. A `Recipe`'s hash covers the command, the adjustment's version and whatever
else the recipe says changes the tree, so a changed recipe gets a new tarball.

The scratch tree is removed only when no file system is still mounted under it: debootstrap
mounts /proc (and may bind /dev) inside its target, and a recursive delete through a bind
mount would reach the host.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from msgspec import Struct

__all__ = [
    "MIRROR", "DebootstrapError", "Recipe", "cached_tarball", "debootstrap_command",
    "drop_apt_caches",
]

MIRROR = "http://deb.debian.org/debian"


class DebootstrapError(RuntimeError):
    """debootstrap failed or produced a tree without what the recipe promises."""


def debootstrap_command(include: Sequence[str]) -> tuple[str, ...]:
    """The command, with ``{target}`` for the tree's path."""
    extra = (f"--include={','.join(include)}",) if include else ()
    return ("debootstrap", "--variant=minbase", *extra, "bookworm", "{target}", MIRROR)


class Recipe(Struct, frozen=True):
    name: str
    """file name stem of the tarball, e.g. ``php-apache``"""
    include: tuple[str, ...]
    """packages beyond minbase"""
    adjust: Callable[[Path], None]
    """changes made to the tree before it is tarred"""
    version: str
    """bumped when ``adjust`` changes in a way ``fingerprint`` does not show"""
    fingerprint: tuple[str, ...] = ()
    """the adjustment's constants (file contents it writes, paths it changes)"""

    @property
    def command(self) -> tuple[str, ...]:
        return debootstrap_command(self.include)

    @property
    def hash(self) -> str:
        parts = (self.version, *self.command, *self.fingerprint)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cached_tarball(cache_dir: Path, recipe: Recipe) -> Path:
    """The cached rootfs tarball of ``recipe``, built first if missing."""
    tarball = cache_dir / f"{recipe.name}-{recipe.hash[:16]}.tar"
    if tarball.is_file():
        return tarball
    scratch_parent = cache_dir / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{recipe.name}-", dir=scratch_parent))
    try:
        target = scratch / "rootfs"
        _debootstrap(recipe.command, target, log=scratch / "debootstrap.log")
        recipe.adjust(target)
        partial = scratch / "rootfs.tar"
        _tar(target, partial)
        os.replace(partial, tarball)
    finally:
        _remove_unmounted_tree(scratch)
    own = re.compile(rf"{re.escape(recipe.name)}-[0-9a-f]{{16}}")
    for stale in cache_dir.glob(f"{recipe.name}-*.tar"):
        if stale != tarball and own.fullmatch(stale.stem):
            stale.unlink(missing_ok=True)
    return tarball


def drop_apt_caches(root: Path) -> None:
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for child in (root / cache).glob("*"):
            if child.is_file():
                child.unlink()


def _debootstrap(template: Sequence[str], target: Path, *, log: Path) -> None:
    command = [part.format(target=target) for part in template]
    with log.open("wb") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise DebootstrapError(
            f"{' '.join(command)} failed (exit {result.returncode}):\n" + "\n".join(tail)
        )


def _tar(root: Path, dest: Path) -> None:
    command = [
        "tar", "--create", "--file", str(dest), "--directory", str(root), "--numeric-owner",
        "--sort=name", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", ".",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DebootstrapError(f"tar of {root} failed: {result.stderr.strip()}")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    decoded = [p.replace("\\040", " ").replace("\\011", "\t") for p in points]
    return sorted((p for p in decoded if p.startswith(prefix)), reverse=True)


def _remove_unmounted_tree(path: Path) -> None:
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    left = _mounts_under(path)
    if left:
        raise DebootstrapError(f"not removing {path}: still mounted under it: {left}")
    shutil.rmtree(path)
