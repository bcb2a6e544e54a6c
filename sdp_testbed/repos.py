"""Bare repositories filled straight from dulwich objects: no working tree, no git CLI.

`init_bare` makes an empty bare repository whose HEAD names `refs/heads/main`.
`commit_files` writes one commit onto a branch. Its parent and starting tree are the
branch's head (or, for a branch that does not exist yet, the head of branch `base`, or
nothing); it applies the given files (content, or None to delete) and moves the branch only
if nobody moved it meanwhile.
`branch_head` reads a branch's commit. Shas are returned as 40-character hex strings.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Mapping
from pathlib import Path

from dulwich.index import commit_tree
from dulwich.object_store import iter_tree_contents
from dulwich.objects import Blob, Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

__all__ = ["DEFAULT_AUTHOR", "branch_head", "commit_files", "init_bare"]

DEFAULT_AUTHOR = "Tester <tester@example.invalid>"
_FILE_MODE = stat.S_IFREG | 0o644
_EXECUTABLE_MODE = stat.S_IFREG | 0o755
_SYMLINK_MODE = stat.S_IFLNK


def init_bare(path: Path) -> None:
    """Create an empty bare repository at `path` (made if missing) with HEAD -> main."""
    path.mkdir(parents=True, exist_ok=True)
    with Repo.init_bare(str(path), default_branch=b"main") as repo:
        repo.refs.set_symbolic_ref(Ref(b"HEAD"), _branch_ref("main"))


def branch_head(repo_path: Path, branch: str) -> str | None:
    """The hex sha `branch` points at, or None when the branch does not exist."""
    with Repo(str(repo_path)) as repo:
        sha = _head(repo, _branch_ref(branch))
    return None if sha is None else sha.decode("ascii")


def commit_files(
    repo_path: Path,
    *,
    branch: str,
    files: Mapping[str, bytes | None],
    message: str,
    base: str | None = None,
    author: str = DEFAULT_AUTHOR,
    executable: frozenset[str] = frozenset(),
    symlinks: frozenset[str] = frozenset(),
) -> str:
    """Commit `files` onto `branch` of the bare repository at `repo_path`; return the sha.

    Paths use '/' between directories. Content replaces or adds a file (mode 755 when the
    path is in `executable`, else 644; a symlink whose target is the content when the path is
    in `symlinks`); None deletes it. Files not named keep their content and mode.
    """
    _check_paths(files, executable)
    ref = _branch_ref(branch)
    with Repo(str(repo_path)) as repo:
        parent = _head(repo, ref)
        start = parent if parent is not None else _start_commit(repo, base)
        entries = _tree_entries(repo, start)
        for path, content in files.items():
            key = path.encode("utf-8")
            if content is None:
                if entries.pop(key, None) is None:
                    raise ValueError(f"cannot delete {path!r}: not in the tree of {branch!r}")
                continue
            blob = Blob.from_string(content)
            repo.object_store.add_object(blob)
            mode = _EXECUTABLE_MODE if path in executable else _FILE_MODE
            if path in symlinks:
                mode = _SYMLINK_MODE
            entries[key] = (blob.id, mode)
        tree_id = commit_tree(
            repo.object_store, [(p, sha, mode) for p, (sha, mode) in sorted(entries.items())]
        )
        commit = _new_commit(
            tree_id=tree_id,
            parents=[] if start is None else [start],
            author=author,
            message=message,
        )
        repo.object_store.add_object(commit)
        if not repo.refs.set_if_equals(ref, parent, commit.id):
            raise RuntimeError(f"branch {branch!r} of {repo_path} moved while committing")
    return commit.id.decode("ascii")


def _branch_ref(branch: str) -> Ref:
    if not branch or branch.startswith(("/", "refs/")) or ".." in branch:
        raise ValueError(f"not a plain branch name: {branch!r}")
    return Ref(b"refs/heads/" + branch.encode("utf-8"))


def _head(repo: Repo, ref: Ref) -> ObjectID | None:
    try:
        return repo.refs[ref]
    except KeyError:
        return None


def _start_commit(repo: Repo, base: str | None) -> ObjectID | None:
    if base is None:
        return None
    sha = _head(repo, _branch_ref(base))
    if sha is None:
        raise ValueError(f"base branch {base!r} does not exist")
    return sha


def _tree_entries(repo: Repo, commit_id: ObjectID | None) -> dict[bytes, tuple[ObjectID, int]]:
    if commit_id is None:
        return {}
    commit = repo[commit_id]
    assert isinstance(commit, Commit)
    return {
        entry.path: (entry.sha, entry.mode)
        for entry in iter_tree_contents(repo.object_store, commit.tree)
        if entry.path is not None and entry.sha is not None and entry.mode is not None
    }


def _new_commit(*, tree_id: ObjectID, parents: list[ObjectID], author: str, message: str) -> Commit:
    now = int(time.time())
    commit = Commit()
    commit.tree = tree_id
    commit.parents = parents
    commit.author = commit.committer = author.encode("utf-8")
    commit.author_time = commit.commit_time = now
    commit.author_timezone = commit.commit_timezone = 0
    commit.encoding = b"UTF-8"
    commit.message = (
        message.encode("utf-8") if message.endswith("\n") else (message + "\n").encode("utf-8")
    )
    return commit


def _check_paths(files: Mapping[str, bytes | None], executable: frozenset[str]) -> None:
    for path in files:
        parts = path.split("/")
        if not path or any(part in ("", ".", "..", ".git") for part in parts):
            raise ValueError(f"not a relative file path: {path!r}")
    stray = sorted(p for p in executable if files.get(p) is None)
    if stray:
        raise ValueError(f"executable paths without content in files: {stray}")
