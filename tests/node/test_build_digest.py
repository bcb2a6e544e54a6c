"""The build record's digest is hashed again whenever the binary may have changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sdp_node.build import DigestMemo


def test_a_binary_rewritten_with_the_same_size_gets_its_new_digest(tmp_path: Path) -> None:
    binary = tmp_path / "app"
    binary.write_bytes(b"a" * 4096)
    memo = DigestMemo()
    assert memo.digest(binary) == hashlib.sha256(b"a" * 4096).hexdigest()
    assert memo.digest(binary) == hashlib.sha256(b"a" * 4096).hexdigest()
    binary.write_bytes(b"b" * 4096)  # same size, same second: ctime still moves
    assert memo.digest(binary) == hashlib.sha256(b"b" * 4096).hexdigest()


def test_a_binary_replaced_by_another_file_gets_its_digest(tmp_path: Path) -> None:
    binary, other = tmp_path / "app", tmp_path / "other"
    binary.write_bytes(b"one")
    other.write_bytes(b"two")
    memo = DigestMemo()
    memo.digest(binary)
    other.replace(binary)
    assert memo.digest(binary) == hashlib.sha256(b"two").hexdigest()
