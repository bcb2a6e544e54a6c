"""A root file system described as entries, hashed and written as a tar for `docker import`.

`Rootfs` collects what an image holds (directories, files copied from this host or given as
bytes, symlinks) without touching the disk. `content_hash` digests exactly what `write_tar`
would write, so an image built from the same entries can be recognised and kept.
The tar is reproducible: entries sorted, owner root, one fixed mtime, parents implied.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from msgspec import Struct

__all__ = ["Rootfs"]

_MTIME = 1_704_067_200  # 2024-01-01T00:00:00Z
_CHUNK = 1 << 20


class _Dir(Struct, frozen=True):
    mode: int


class _File(Struct, frozen=True):
    mode: int
    source: Path | None = None
    content: bytes | None = None


class _Symlink(Struct, frozen=True):
    target: str


_Entry = _Dir | _File | _Symlink


class Rootfs:
    """The entries of an image's file system, keyed by absolute path inside the image."""

    def __init__(self) -> None:
        self._entries: dict[PurePosixPath, _Entry] = {}

    def __contains__(self, path: str) -> bool:
        return _key(path) in self._entries

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._put(path, _Dir(mode))

    def add_bytes(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self._put(path, _File(mode, content=content))

    def add_host_file(self, path: str, source: Path | None = None) -> None:
        """Copy host file `source` (default: the same path), following symlinks."""
        real = Path(os.path.realpath(source if source is not None else path))
        if not real.is_file():
            raise FileNotFoundError(f"{path}: host file {real} does not exist")
        self._put(path, _File(stat.S_IMODE(real.stat().st_mode), source=real))

    def add_symlink(self, path: str, target: str) -> None:
        self._put(path, _Symlink(target))

    def add_host_tree(self, source: Path, dest: str | None = None) -> None:
        """Copy a host directory tree, keeping the symlinks inside it as symlinks."""
        root = PurePosixPath(dest if dest is not None else str(source))
        for directory, dirnames, filenames in os.walk(source):
            here = Path(directory)
            inside = root / here.relative_to(source)
            self.add_dir(str(inside), stat.S_IMODE(here.stat().st_mode))
            for name in sorted(dirnames + filenames):
                host = here / name
                if host.is_symlink():
                    self.add_symlink(str(inside / name), os.readlink(host))
                elif host.is_file():
                    self.add_host_file(str(inside / name), host)

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for path, entry in self._ordered():
            digest.update(f"{path}\0{_describe(entry)}\0".encode())
            if isinstance(entry, _File):
                for chunk in _chunks(entry):
                    digest.update(chunk)
        return digest.hexdigest()

    def write_tar(self, dest: Path) -> None:
        with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as archive:
            for path, entry in self._ordered():
                info = tarfile.TarInfo(str(path).lstrip("/"))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = _MTIME
                if isinstance(entry, _Dir):
                    info.type, info.mode = tarfile.DIRTYPE, entry.mode
                    archive.addfile(info)
                elif isinstance(entry, _Symlink):
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                    archive.addfile(info)
                else:
                    info.mode = entry.mode
                    if entry.content is not None:
                        info.size = len(entry.content)
                        archive.addfile(info, io.BytesIO(entry.content))
                    else:
                        assert entry.source is not None
                        info.size = entry.source.stat().st_size
                        with entry.source.open("rb") as handle:
                            archive.addfile(info, handle)

    def _put(self, path: str, entry: _Entry) -> None:
        key = _key(path)
        existing = self._entries.get(key)
        if existing is not None and existing != entry and not isinstance(existing, _Dir):
            raise ValueError(f"{key} is already in the rootfs as {_describe(existing)}")
        self._entries[key] = entry

    def _ordered(self) -> Iterator[tuple[PurePosixPath, _Entry]]:
        implied = {
            parent
            for path in self._entries
            for parent in path.parents
            if parent != PurePosixPath("/") and parent not in self._entries
        }
        everything: dict[PurePosixPath, _Entry] = dict.fromkeys(implied, _Dir(0o755))
        everything.update(self._entries)
        for path in self._entries:
            for parent in path.parents:
                if isinstance(everything.get(parent), _Symlink):
                    raise ValueError(f"{path} lies under the symlink {parent}")
        for path in sorted(everything, key=lambda p: p.parts):
            yield path, everything[path]


def _key(path: str) -> PurePosixPath:
    key = PurePosixPath("/") / path
    if ".." in key.parts or key == PurePosixPath("/"):
        raise ValueError(f"not a path inside the rootfs: {path!r}")
    return key


def _describe(entry: _Entry) -> str:
    if isinstance(entry, _Dir):
        return f"dir {entry.mode:o}"
    if isinstance(entry, _Symlink):
        return f"symlink -> {entry.target}"
    return f"file {entry.mode:o}"


def _chunks(entry: _File) -> Iterator[bytes]:
    if entry.content is not None:
        yield entry.content
        return
    assert entry.source is not None
    with entry.source.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk
