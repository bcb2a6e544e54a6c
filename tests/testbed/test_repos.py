"""Bare repositories written straight from dulwich objects."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from dulwich.object_store import iter_tree_contents
from dulwich.objects import Blob, Commit
from dulwich.refs import Ref
from dulwich.repo import Repo

from sdp_testbed.repos import branch_head, commit_files, init_bare


def tree_of(repo_path: Path, sha: str) -> dict[str, tuple[bytes, int]]:
    """path -> (content, mode) of a commit's whole tree."""
    with Repo(str(repo_path)) as repo:
        commit = repo[sha.encode()]
        assert isinstance(commit, Commit)
        files = {}
        for entry in iter_tree_contents(repo.object_store, commit.tree):
            assert entry.path is not None and entry.sha is not None and entry.mode is not None
            blob = repo[entry.sha]
            assert isinstance(blob, Blob)
            files[entry.path.decode()] = (blob.data, entry.mode)
        return files


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    path = tmp_path / "svc.git"
    init_bare(path)
    return path


def test_init_bare_points_head_at_main(repo_path: Path) -> None:
    with Repo(str(repo_path)) as repo:
        assert repo.bare
        assert repo.refs.read_ref(Ref(b"HEAD")) == b"ref: refs/heads/main"
    assert branch_head(repo_path, "main") is None


def test_first_commit_starts_from_nothing(repo_path: Path) -> None:
    sha = commit_files(
        repo_path,
        branch="main",
        files={"go.mod": b"module x\n", "cmd/app/main.go": b"package main\n"},
        message="first",
    )
    assert branch_head(repo_path, "main") == sha
    assert tree_of(repo_path, sha) == {
        "go.mod": (b"module x\n", stat.S_IFREG | 0o644),
        "cmd/app/main.go": (b"package main\n", stat.S_IFREG | 0o644),
    }
    with Repo(str(repo_path)) as repo:
        commit = repo[sha.encode()]
        assert isinstance(commit, Commit)
        assert commit.parents == []
        assert commit.author == b"Tester <tester@example.invalid>"
        assert commit.message == b"first\n"


def test_next_commit_applies_changes_on_the_branch_tree(repo_path: Path) -> None:
    first = commit_files(
        repo_path, branch="main", files={"a": b"1", "dir/b": b"2", "dir/c": b"3"}, message="1"
    )
    second = commit_files(
        repo_path,
        branch="main",
        files={"a": b"1'", "dir/b": None, "run.sh": b"#!/bin/sh\n"},
        message="2",
        executable=frozenset({"run.sh"}),
        author="Someone <someone@example.invalid>",
    )
    assert tree_of(repo_path, second) == {
        "a": (b"1'", stat.S_IFREG | 0o644),
        "dir/c": (b"3", stat.S_IFREG | 0o644),
        "run.sh": (b"#!/bin/sh\n", stat.S_IFREG | 0o755),
    }
    with Repo(str(repo_path)) as repo:
        commit = repo[second.encode()]
        assert isinstance(commit, Commit)
        assert [p.decode() for p in commit.parents] == [first]
        assert commit.author == b"Someone <someone@example.invalid>"


def test_deleting_the_last_file_of_a_directory_drops_the_directory(repo_path: Path) -> None:
    commit_files(repo_path, branch="main", files={"a": b"", "d/e/f": b""}, message="1")
    sha = commit_files(repo_path, branch="main", files={"d/e/f": None}, message="2")
    assert set(tree_of(repo_path, sha)) == {"a"}


def test_a_new_branch_starts_from_its_base(repo_path: Path) -> None:
    main = commit_files(repo_path, branch="main", files={"a": b"main"}, message="m")
    feature = commit_files(
        repo_path, branch="feature/login-error", base="main", files={"b": b"f"}, message="f"
    )
    assert tree_of(repo_path, feature) == {
        "a": (b"main", stat.S_IFREG | 0o644),
        "b": (b"f", stat.S_IFREG | 0o644),
    }
    with Repo(str(repo_path)) as repo:
        commit = repo[feature.encode()]
        assert isinstance(commit, Commit)
        assert [p.decode() for p in commit.parents] == [main]
    assert branch_head(repo_path, "main") == main


def test_base_is_ignored_once_the_branch_exists(repo_path: Path) -> None:
    commit_files(repo_path, branch="main", files={"a": b"main"}, message="m")
    commit_files(repo_path, branch="develop", files={"d": b"d"}, message="d")
    sha = commit_files(repo_path, branch="develop", base="main", files={"e": b""}, message="e")
    assert set(tree_of(repo_path, sha)) == {"d", "e"}


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        ({"missing": None}, {}, "cannot delete 'missing'"),
        ({"../x": b""}, {}, "not a relative file path"),
        ({"a//b": b""}, {}, "not a relative file path"),
        ({"a": b""}, {"base": "nope"}, "base branch 'nope' does not exist"),
        ({"a": b""}, {"executable": frozenset({"b"})}, "executable paths without content"),
    ],
)
def test_bad_requests_name_the_problem(
    repo_path: Path, files: dict[str, bytes | None], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        commit_files(repo_path, branch="main", files=files, message="x", **kwargs)  # type: ignore[arg-type]
    assert branch_head(repo_path, "main") is None
