"""Who changed the state: the state repository's revision and each file's last author (dulwich).

The audit names the author of the last commit that touched a sandbox's state file, and flags a
file whose content differs from that commit (an uncommitted edit). A state directory outside a
git repository has no authors; that is not an error.

Every pass records the revision; few need an author. The revision of an ordinary checkout is
read from its ``HEAD``, loose refs and ``packed-refs`` files (``_head_revision``: git's
documented layout, ~25 lines) without importing dulwich, whose refs module alone cost ~8 ms of
every ``--once`` (issue 15). dulwich's ``Repo`` loads only for authors, commit times, and the
revision of a checkout whose ``.git`` is a file (a worktree or a submodule).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import Struct

if TYPE_CHECKING:
    from dulwich.objects import Commit
    from dulwich.repo import Repo

_OBJECT_ID = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")
_SYMBOLIC_DEPTH = 5
"""git follows a symbolic ref through at most five others (refs.c, SYMREF_MAXDEPTH)"""


class Authorship(Struct, frozen=True):
    author: str | None
    uncommitted: bool


class StateRepository:
    def __init__(self, state_root: Path) -> None:
        self.state_root = state_root.resolve()
        self._top = _top_level(self.state_root)
        """the checkout the state is in (the folder holding ``.git``), or None"""
        self._opened: Repo | None = None
        self._cache: dict[str, Authorship] = {}

    @property
    def _repo(self) -> Repo | None:
        if self._top is None:
            return None
        if self._opened is None:
            from dulwich.errors import NotGitRepository
            from dulwich.repo import Repo

            try:
                self._opened = Repo(str(self._top))
            except NotGitRepository:  # a broken .git: no authors, as outside a repository
                self._top = None
                return None
        return self._opened

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()

    @cached_property
    def _head(self) -> Commit | None:
        from dulwich.objects import Commit

        if self._repo is None:
            return None
        try:
            head = self._repo.object_store[self._repo.head()]
        except KeyError:
            return None
        return head if isinstance(head, Commit) else None

    @property
    def revision(self) -> str | None:
        if self._top is not None and self._opened is None and (self._top / ".git").is_dir():
            return _head_revision(self._top / ".git")
        head = self._head
        return head.id.decode() if head is not None else None

    def _relative(self, path: Path) -> bytes | None:
        if self._repo is None:
            return None
        top = Path(self._repo.path).resolve()
        try:
            return path.resolve().relative_to(top).as_posix().encode()
        except ValueError:
            return None

    def authorship(self, path: Path) -> Authorship:
        """Author of the last commit touching ``path``, and whether the file differs from it."""
        key = str(path)
        if key in self._cache:
            return self._cache[key]
        relative = self._relative(path)
        head = self._head
        if self._repo is None or relative is None or head is None:
            result = Authorship(author=None, uncommitted=self._repo is not None)
        else:
            walker = self._repo.get_walker(include=[head.id], paths=[relative], max_entries=1)
            entries = list(walker)
            author = entries[0].commit.author.decode("utf-8", "replace") if entries else None
            committed = self._blob_at(head, relative)
            current = _blob_id(path)
            result = Authorship(author=author, uncommitted=committed != current)
        self._cache[key] = result
        return result

    def last_commit_time(self, path: Path) -> datetime | None:
        relative = self._relative(path)
        head = self._head
        if self._repo is None or relative is None or head is None:
            return None
        entries = list(self._repo.get_walker(include=[head.id], paths=[relative], max_entries=1))
        if not entries:
            return None
        return datetime.fromtimestamp(entries[0].commit.commit_time, UTC)

    def _blob_at(self, commit: Commit, relative: bytes) -> bytes | None:
        from dulwich.objects import Blob, ObjectID, Tree

        assert self._repo is not None
        obj: object = self._repo.object_store[commit.tree]
        for part in relative.split(b"/"):
            if not isinstance(obj, Tree) or part not in obj:
                return None
            _mode, sha = obj[part]
            obj = self._repo.object_store[ObjectID(sha)]
        return obj.id if isinstance(obj, Blob) else None


def _head_revision(git_dir: Path) -> str | None:
    """The commit ``HEAD`` of ``git_dir`` names, following symbolic refs as git does; None
    before the first commit, or when ``HEAD`` leads anywhere but an object id under
    ``refs/`` (nothing outside ``git_dir`` is ever read)."""
    name = b"HEAD"
    for _ in range(_SYMBOLIC_DEPTH + 1):
        value = _ref_value(git_dir, name)
        if value is None:
            return None
        if not value.startswith(b"ref: "):
            return value.decode() if _OBJECT_ID.fullmatch(value) else None
        name = value[len(b"ref: "):].strip()
        parts = name.split(b"/")
        if parts[0] != b"refs" or any(part in (b"", b".", b"..") for part in parts):
            return None
    return None


def _ref_value(git_dir: Path, name: bytes) -> bytes | None:
    """The loose file of ref ``name``, else its line in ``packed-refs``, stripped."""
    try:
        return (git_dir / name.decode("utf-8", "replace")).read_bytes().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
        pass  # ValueError: a name with a NUL byte, which no file has
    try:
        packed = (git_dir / "packed-refs").read_bytes()
    except FileNotFoundError:
        return None
    for line in packed.splitlines():
        object_id, _, ref = line.partition(b" ")
        if ref == name and not line.startswith((b"#", b"^")):
            return object_id
    return None


def _top_level(folder: Path) -> Path | None:
    """The nearest folder at or above ``folder`` that holds ``.git`` (as ``Repo.discover``)."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def last_change(repository: StateRepository, path: Path) -> datetime | None:
    """When ``path`` last changed: its last commit, or its mtime when edited or untracked."""
    authorship = repository.authorship(path)
    committed = repository.last_commit_time(path)
    if committed is not None and not authorship.uncommitted:
        return committed
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return committed


def _blob_id(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest().encode()  # noqa: S324
