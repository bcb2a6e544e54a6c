"""Rootfs descriptions: hashed by content, written as reproducible tars."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from sdp_testbed.image_recipes import micro_rootfs, shared_libraries
from sdp_testbed.rootfs import Rootfs


def small_rootfs(tmp_path: Path, content: bytes = b"#!/bin/sh\n") -> Rootfs:
    host_file = tmp_path / "tool"
    host_file.write_bytes(content)
    host_file.chmod(0o755)
    rootfs = Rootfs()
    rootfs.add_symlink("/bin", "usr/bin")
    rootfs.add_host_file("/usr/bin/tool", host_file)
    rootfs.add_bytes("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    rootfs.add_dir("/tmp", 0o1777)
    return rootfs


def test_the_hash_follows_content_not_the_host_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert (
        small_rootfs(tmp_path / "a").content_hash() == small_rootfs(tmp_path / "b").content_hash()
    )
    changed = small_rootfs(tmp_path / "a", content=b"#!/bin/sh\nexit 1\n")
    assert changed.content_hash() != small_rootfs(tmp_path / "b").content_hash()


def test_the_tar_is_reproducible_and_owned_by_root(tmp_path: Path) -> None:
    rootfs = small_rootfs(tmp_path)
    rootfs.write_tar(tmp_path / "one.tar")
    rootfs.write_tar(tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(tmp_path / "one.tar") as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert list(members) == ["bin", "etc", "etc/passwd", "tmp", "usr", "usr/bin", "usr/bin/tool"]
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["usr/bin/tool"].mode == 0o755
    assert members["tmp"].mode == 0o1777


def test_nothing_may_live_under_a_symlink(tmp_path: Path) -> None:
    rootfs = small_rootfs(tmp_path)
    rootfs.add_bytes("/bin/sneaky", b"")
    with pytest.raises(ValueError, match="under the symlink /bin"):
        rootfs.content_hash()


def test_conflicting_entries_are_refused(tmp_path: Path) -> None:
    rootfs = small_rootfs(tmp_path)
    with pytest.raises(ValueError, match="/etc/passwd is already in the rootfs"):
        rootfs.add_symlink("/etc/passwd", "/dev/null")
    with pytest.raises(ValueError, match="not a path inside the rootfs"):
        rootfs.add_bytes("/../etc/shadow", b"")


def test_micro_rootfs_links_every_applet_to_busybox() -> None:
    rootfs = micro_rootfs()
    assert "/usr/bin/sh" in rootfs
    assert "/usr/bin/busybox" in rootfs
    assert "/bin" in rootfs


def test_shared_libraries_include_the_loader_under_merged_usr() -> None:
    libraries = shared_libraries([Path("/bin/ls")])
    assert "/usr/lib64/ld-linux-x86-64.so.2" in libraries
    assert all(not path.startswith(("/lib/", "/lib64/")) for path in libraries)
    assert all(source.is_file() for source in libraries.values())
