"""The state repository read through dulwich: revisions, the commit range, each commit's state.

Reads git objects only (never the work tree, except ``worktree_snapshot``, which reads the state
directory to find uncommitted changes). The state directory may be a folder of a larger
repository (``state/`` in a project repository): paths are always relative to the state
directory, as the loader and the refusal lines name them. ``gather`` turns a range into the
``RangeFacts`` the pure judge takes. Errors (an unknown revision, a shallow clone) are
``AccessError`` with what to do.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from dulwich.errors import NotGitRepository
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.objectspec import parse_commit
from dulwich.repo import Repo
from msgspec import Struct
from pydantic import ValidationError

from sdp_reconciler.access.changes import (
    Content,
    FileKind,
    Requirement,
    SandboxView,
    StateFile,
    classify,
    requirements,
    sandbox_view,
)
from sdp_reconciler.access.facts import AccessVersion, CommitFacts, RangeFacts, SandboxUse
from sdp_reconciler.access.model import ACCESS_FILE, AccessFile, access_problems
from sdp_reconciler.errors import SdpError
from sdp_reconciler.state.sources import MAX_FILE_BYTES, SourceDoc, SourceError, parse_source

PORTS_FILE = "ports.yaml"
_DIRECTORIES = ("sandboxes", "templates", "environments")
_SUFFIXES = re.compile(r"^(?P<name>.*?)(?P<ops>(?:[~^][0-9]*)*)$")


class AccessError(SdpError):
    """The range cannot be read: an unknown revision, a shallow clone, no repository."""


class Parsed(Struct, frozen=True):
    content: Content
    source: SourceDoc | None


class Snapshot:
    """The state files of one version (a commit, nothing, or the work tree), read lazily."""

    def __init__(self, files: dict[str, bytes], read: Callable[[str, bytes], Parsed]) -> None:
        self.files = files
        """path relative to the state directory -> git blob id"""
        self._read = read

    @classmethod
    def empty(cls) -> Snapshot:
        return cls({}, _nothing)

    def parsed(self, path: str) -> Parsed | None:
        blob = self.files.get(path)
        return self._read(path, blob) if blob is not None else None

    def content(self, path: str) -> Content | None:
        parsed = self.parsed(path)
        return parsed.content if parsed is not None else None

    def template(self, name: str) -> Content | None:
        for suffix in (".yaml", ".yml"):
            found = self.content(f"templates/{name}{suffix}")
            if found is not None:
                return found
        return None

    def access(self) -> AccessVersion:
        parsed = self.parsed(ACCESS_FILE)
        if parsed is None:
            return AccessVersion()
        if parsed.source is None or not isinstance(parsed.content.data, dict):
            return AccessVersion(present=True)
        try:
            model = AccessFile.model_validate(parsed.content.data)
        except ValidationError:
            return AccessVersion(present=True)
        if access_problems(model, parsed.source):
            return AccessVersion(present=True)
        return AccessVersion(present=True, model=model)

    def sandbox_views(self) -> Iterator[tuple[str, SandboxView | None]]:
        for path in sorted(self.files):
            file = classify(path)
            if file is None or file.kind is not FileKind.SANDBOX:
                continue
            content = self.content(path)
            if content is None or not content.readable:
                yield file.stem, None
            else:
                yield file.stem, sandbox_view(content.data, self.template)

    def without(self, path: str) -> Snapshot:
        return Snapshot({k: v for k, v in self.files.items() if k != path}, self._read)


def _nothing(path: str, _blob: bytes) -> Parsed:
    raise AssertionError(f"an empty snapshot has no {path}")  # pragma: no cover


def parse_content(raw: bytes, display: str) -> Parsed:
    """One version of a state file as plain data, or why it is not readable."""
    if len(raw) > MAX_FILE_BYTES:
        return Parsed(Content(problem=f"file is over {MAX_FILE_BYTES} bytes"), None)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return Parsed(Content(problem="file is not UTF-8"), None)
    try:
        source = parse_source(text, display)
    except SourceError as e:
        return Parsed(Content(problem=e.problem.message), None)
    return Parsed(Content(data=source.data), source)


def blob_id(data: bytes) -> bytes:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest().encode()  # noqa: S324


class StateHistory:
    """The git repository holding a state directory."""

    def __init__(self, repo: Repo, state_dir: Path) -> None:
        self.repo = repo
        self.state_dir = state_dir
        top = Path(repo.path).resolve()
        relative = state_dir.resolve().relative_to(top).as_posix()
        self.prefix = () if relative == "." else tuple(relative.encode().split(b"/"))
        self._parsed: dict[bytes, Parsed] = {}
        self._snapshots: dict[bytes, Snapshot] = {}

    @classmethod
    def open(cls, state_dir: Path) -> StateHistory | None:
        """The repository of ``state_dir``, or None when it is not in one."""
        try:
            repo = Repo.discover(str(state_dir))
        except NotGitRepository:
            return None
        return cls(repo, state_dir)

    def close(self) -> None:
        self.repo.close()

    def has_commits(self) -> bool:
        try:
            self.repo.head()
        except KeyError:
            return False
        return True

    # --- revisions ---------------------------------------------------------------------------

    def resolve(self, revision: str) -> Commit:
        """A commit from a name git would accept here: a ref, a (short) id, ``X~2``, ``X^2``."""
        match = _SUFFIXES.match(revision)
        assert match is not None
        try:
            commit = parse_commit(self.repo, match["name"])
        except (KeyError, ValueError):
            raise AccessError(f"unknown revision {revision!r} in {self.repo.path}") from None
        for op in re.findall(r"[~^][0-9]*", match["ops"]):
            count = int(op[1:] or 1)
            steps = [0] * count if op[0] == "~" else ([count - 1] if count else [])
            for index in steps:
                if index >= len(commit.parents):
                    raise AccessError(f"revision {revision!r}: a commit has no such parent")
                commit = self.commit(commit.parents[index])
        return commit

    def commit(self, sha: bytes) -> Commit:
        try:
            found = self.repo.object_store[ObjectID(sha)]
        except KeyError:
            raise AccessError(
                f"commit {sha.decode()[:7]} is missing from {self.repo.path}: the clone is "
                "shallow; fetch the full history (Bitbucket Pipelines: 'clone: depth: full')"
            ) from None
        if not isinstance(found, Commit):
            raise AccessError(f"{sha.decode()[:7]} is not a commit")
        return found

    def between(self, base: Commit | None, head: Commit) -> list[Commit]:
        """Commits reachable from ``head`` and not from ``base``, parents before children."""
        found: dict[bytes, Commit] = {}
        excluded = self._ancestors(base) if base is not None else set()
        stack = [head.id]
        while stack:
            sha = stack.pop()
            if sha in found or sha in excluded:
                continue
            commit = self.commit(sha)
            found[sha] = commit
            stack.extend(commit.parents)
        return _parents_first(found)

    def _ancestors(self, commit: Commit) -> set[bytes]:
        """``commit`` and its ancestors; a shallow clone's missing ones below it do not
        matter, because nothing behind ``base`` is judged."""
        seen: set[bytes] = set()
        stack = [commit.id]
        while stack:
            sha = stack.pop()
            if sha in seen:
                continue
            seen.add(sha)
            try:
                found = self.repo.object_store[ObjectID(sha)]
            except KeyError:
                continue
            if isinstance(found, Commit):
                stack.extend(found.parents)
        return seen

    # --- versions of the state -------------------------------------------------------------

    def snapshot(self, commit: Commit | None) -> Snapshot:
        tree_id = self._state_tree(commit) if commit is not None else None
        if tree_id is None:
            return Snapshot({}, self._read_blob)
        if tree_id not in self._snapshots:
            self._snapshots[tree_id] = Snapshot(self._tree_files(tree_id), self._read_blob)
        return self._snapshots[tree_id]

    def _state_tree(self, commit: Commit) -> bytes | None:
        tree_id: bytes = commit.tree
        for part in self.prefix:
            tree = self.repo.object_store[ObjectID(tree_id)]
            if not isinstance(tree, Tree) or part not in tree:
                return None
            mode, sha = tree[part]
            if not stat.S_ISDIR(mode):
                return None
            tree_id = sha
        return tree_id

    def _tree_files(self, tree_id: bytes) -> dict[str, bytes]:
        store = self.repo.object_store
        files: dict[str, bytes] = {}
        tree = store[ObjectID(tree_id)]
        assert isinstance(tree, Tree)
        for entry in tree.items():
            name = entry.path.decode("utf-8", "replace")
            if stat.S_ISDIR(entry.mode) and name in _DIRECTORIES:
                folder = store[entry.sha]
                assert isinstance(folder, Tree)
                for item in folder.items():
                    path = f"{name}/{item.path.decode('utf-8', 'replace')}"
                    if not stat.S_ISDIR(item.mode) and classify(path) is not None:
                        files[path] = _entry_id(item.mode, item.sha)
            elif not stat.S_ISDIR(entry.mode) and classify(name) is not None:
                files[name] = _entry_id(entry.mode, entry.sha)
        return files

    def _read_blob(self, path: str, blob: bytes) -> Parsed:
        if blob.startswith(_LINK):
            return Parsed(Content(problem=_LINK_PROBLEM), None)
        if blob not in self._parsed:
            found = self.repo.object_store[ObjectID(blob)]
            raw = found.data if isinstance(found, Blob) else b""
            self._parsed[blob] = parse_content(raw, path)
        return self._parsed[blob]


_LINK = b"link:"
_LINK_PROBLEM = "a symbolic link: SDP judges a state file by its committed content, which a " \
    "link does not have, so any change is possible"


def _entry_id(mode: int, sha: bytes) -> bytes:
    """A tree entry's id in a snapshot; a symbolic link is marked, never read as YAML (the
    loader follows links in the work tree, which the committed link text says nothing
    about)."""
    return _LINK + sha if stat.S_ISLNK(mode) else sha


def worktree_snapshot(state_dir: Path) -> Snapshot:
    """The state directory's files as they are on disk (ports.yaml left out: the reconciler
    writes it)."""
    contents: dict[bytes, bytes] = {}
    files: dict[str, bytes] = {}
    if state_dir.is_dir():
        candidates = [p for p in state_dir.iterdir() if p.is_file()]
        for directory in _DIRECTORIES:
            folder = state_dir / directory
            if folder.is_dir():
                candidates += [p for p in folder.iterdir() if p.is_file()]
        for path in candidates:
            relative = path.relative_to(state_dir).as_posix()
            if relative == PORTS_FILE or classify(relative) is None:
                continue
            try:
                data = path.read_bytes()
            except OSError:
                data = b"\0unreadable"
            files[relative] = blob_id(data)
            contents[files[relative]] = data

    def read(path: str, blob: bytes) -> Parsed:
        return parse_content(contents[blob], path)

    return Snapshot(files, read)


def diff(old: Snapshot, new: Snapshot) -> tuple[Requirement, ...]:
    """What going from ``old`` to ``new`` changes, file by file."""
    out: list[Requirement] = []
    for path in sorted(set(old.files) | set(new.files)):
        if old.files.get(path) == new.files.get(path):
            continue
        file = classify(path)
        assert isinstance(file, StateFile)
        out += requirements(file, old.content(path), new.content(path),
                            old_templates=old.template, new_templates=new.template)
    return tuple(out)


def usage(snapshot: Snapshot) -> dict[str, SandboxUse]:
    return {
        name: SandboxUse(frozenset(view.templates), view.environments) if view else SandboxUse()
        for name, view in snapshot.sandbox_views()
    }


def gather(history: StateHistory, base: Commit | None, head: Commit, *,
           worktree: Snapshot | None = None) -> RangeFacts:
    """The facts the judge needs about ``base..head`` (and the work tree, when given)."""
    commits = []
    for commit in history.between(base, head):
        snapshot = history.snapshot(commit)
        parents: list[Commit | None] = [history.commit(p) for p in commit.parents] or [None]
        commits.append(CommitFacts(
            sha=commit.id.decode(),
            parents=tuple(p.decode() for p in commit.parents),
            author=_email(commit.author),
            diffs=tuple(diff(history.snapshot(p), snapshot) for p in parents),
            access=snapshot.access(),
        ))
    at_head = history.snapshot(head)
    judged = {c.sha for c in commits}
    outside = {p for c in commits for p in c.parents if p not in judged}
    base_snapshot = history.snapshot(base)
    return RangeFacts(
        base=base.id.decode() if base is not None else None,
        head=head.id.decode(),
        base_access=history.snapshot(base).access() if base is not None else AccessVersion(),
        commits=tuple(commits),
        usage=usage(at_head),
        worktree=diff(at_head.without(PORTS_FILE), worktree) if worktree is not None else None,
        worktree_access=worktree is not None and ACCESS_FILE in worktree.files,
        outside={p: diff(base_snapshot, history.snapshot(history.commit(p.encode())))
                 for p in sorted(outside) if base is not None and p != base.id.decode()},
    )


def _email(identity: bytes) -> str:
    text = identity.decode("utf-8", "replace")
    start, end = text.rfind("<"), text.rfind(">")
    return text[start + 1:end].strip() if 0 <= start < end else text.strip()


def _parents_first(commits: dict[bytes, Commit]) -> list[Commit]:
    """Topological order, oldest first among commits that are ready (deterministic)."""
    waiting = {sha: {p for p in c.parents if p in commits} for sha, c in commits.items()}
    children: dict[bytes, list[bytes]] = {}
    for sha, parents in waiting.items():
        for parent in parents:
            children.setdefault(parent, []).append(sha)
    ready = [(commits[s].commit_time, s) for s, p in waiting.items() if not p]
    heapq.heapify(ready)
    ordered: list[Commit] = []
    while ready:
        _, sha = heapq.heappop(ready)
        ordered.append(commits[sha])
        for child in children.get(sha, []):
            waiting[child].discard(sha)
            if not waiting[child]:
                heapq.heappush(ready, (commits[child].commit_time, child))
    return ordered
