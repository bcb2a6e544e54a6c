"""Git with dulwich: one shared object store per repository, and a tree per commit.

Responsible for talking to the remote (ls-remote, fetch) with the credentials of the operation
and for materialising commits into directories. Promises:

* credentials travel only as dulwich's ``username=``/``password=`` arguments: never inside a
  URL (dulwich would write it into ``.git/config``), never on disk, never in argv; host git
  configuration is ignored (``ConfigDict()``), so no ``insteadOf`` or credential helper can
  redirect or record them;
* the Basic-auth header carries them as UTF-8, as git and curl send them and as Bitbucket and
  Apache compare them (``dulwich_credentials``): a password with ``é`` or ``€`` logs in;
* a remote's refusal is ``AuthenticationFailed``; other failures are ``GitError`` with the
  repository name and URL (which never holds credentials);
* a tree is written to a temporary directory and renamed into place, so a directory that
  exists is complete; entries that would escape the tree (``..``, absolute, ``.git``) are
  refused.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from dulwich.client import HTTPUnauthorized
from dulwich.errors import GitProtocolError, HangupException
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.repo import Repo

from sdp_node.config import RepositoryConfig
from sdp_node.errors import AuthenticationFailed, GitError, NotFound
from sdp_node.gitremote import NETWORK_TIMEOUT as NETWORK_TIMEOUT
from sdp_node.gitremote import dulwich_credentials as dulwich_credentials
from sdp_node.gitremote import remote_client
from sdp_node.protocol import Credentials

HEADS = b"refs/heads/"
REMOTE_HEADS = b"refs/remotes/origin/"

Log = Callable[[str], None]


def _translate(repository: RepositoryConfig, error: Exception) -> Exception:
    if isinstance(error, HTTPUnauthorized):
        return AuthenticationFailed(
            f"authentication failed for repository {repository.name} ({repository.url}): "
            "the remote refused the username or password (LOGIN FAILED)"
        )
    if isinstance(error, NotGitRepository):
        return GitError(f"repository {repository.name}: {error}")
    reason = type(error).__name__
    detail = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, GitProtocolError | HangupException):
        reason = "git protocol error"
    elif isinstance(error, OSError):
        reason = "connection failed"
    return GitError(
        f"cannot reach repository {repository.name} at {repository.url}: {reason}"
        + (f": {detail}" if detail else "")
    )


class NotGitRepository(Exception):
    pass


class GitStore:
    """The object stores and commit trees of one node's repositories."""

    def __init__(self, workspace: Path) -> None:
        self._repos = workspace / "repos"
        self._repos.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def store_path(self, repository: RepositoryConfig) -> Path:
        return self._repos / f"{repository.name}.git"

    def _open(self, repository: RepositoryConfig) -> Repo:
        path = self.store_path(repository)
        if not (path / "objects").is_dir():
            path.mkdir(parents=True, exist_ok=True)
            return Repo.init_bare(str(path))
        return Repo(str(path))

    def ls_remote(self, repository: RepositoryConfig, credentials: Credentials) -> dict[str, str]:
        """Branch name -> commit SHA on the remote."""
        client, path = remote_client(repository.url, credentials)
        try:
            result = client.get_refs(path)  # type: ignore[attr-defined]
        except Exception as e:  # translated below, never re-raised raw
            raise _translate(repository, e) from None
        refs = getattr(result, "refs", result)
        return {
            ref[len(HEADS):].decode(): sha.decode()
            for ref, sha in refs.items()
            if ref.startswith(HEADS) and sha is not None
        }

    def has_store(self, repository: RepositoryConfig) -> bool:
        """Whether the repository was ever fetched into this node (its object store exists)."""
        return (self.store_path(repository) / "objects").is_dir()

    def has_commit(self, repository: RepositoryConfig, commit: str) -> bool:
        return not self.missing(repository, [commit])

    def missing(self, repository: RepositoryConfig, commits: Iterable[str]) -> set[str]:
        """The ones of ``commits`` that are not commits in the store (all, with no store);
        the store is opened once, however many are asked about."""
        wanted = set(commits)
        if not self.has_store(repository):
            return wanted
        repo = Repo(str(self.store_path(repository)))
        try:
            store = repo.object_store
            return {
                commit for commit in wanted
                if (key := ObjectID(commit.encode())) not in store
                or not isinstance(store[key], Commit)
            }
        finally:
            repo.close()

    def fetch(
        self, repository: RepositoryConfig, credentials: Credentials | None, *, log: Log
    ) -> dict[str, str]:
        """Fetch every branch into the shared store; return branch -> SHA as fetched."""
        client, path = remote_client(repository.url, credentials)
        with self._lock(repository.name):
            repo = self._open(repository)
            try:
                store = repo.object_store

                def wants(refs: dict[bytes, bytes], depth: int | None = None) -> list[bytes]:
                    return [
                        sha for ref, sha in refs.items()
                        if ref.startswith(HEADS) and sha is not None
                        and ObjectID(sha) not in store
                    ]

                try:
                    result = client.fetch(path, repo, determine_wants=wants)  # type: ignore[attr-defined]
                except Exception as e:  # translated: the raw error never leaves
                    raise _translate(repository, e) from None
                heads: dict[str, str] = {}
                for ref, sha in result.refs.items():
                    if ref.startswith(HEADS) and sha is not None:
                        heads[ref[len(HEADS):].decode()] = sha.decode()
                        repo.refs[REMOTE_HEADS + ref[len(HEADS):]] = sha
                log(f"fetched {len(heads)} branch(es) of {repository.name}")
                return heads
            finally:
                repo.close()

    def checkout(self, repository: RepositoryConfig, commit: str, dest: Path) -> bool:
        """Write ``commit``'s tree to ``dest``; False when ``dest`` already holds it."""
        if dest.is_dir():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
        repo = self._open(repository)
        try:
            tree_id = self._commit(repo, repository, commit).tree
            staging.mkdir()
            for entry in repo.object_store.iter_tree_contents(tree_id):
                _write_entry(repo, staging, entry.path, entry.mode, entry.sha)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            repo.close()
        return True

    def read_file(self, repository: RepositoryConfig, commit: str, path: str) -> bytes | None:
        """The content of ``path`` at ``commit``, or None when it is not a file there."""
        repo = self._open(repository)
        try:
            obj: object = repo.object_store[self._commit(repo, repository, commit).tree]
            for part in path.strip("/").split("/"):
                if not isinstance(obj, Tree):
                    return None
                try:
                    _mode, sha = obj[part.encode()]
                except KeyError:
                    return None
                obj = repo.object_store[ObjectID(sha)]
            return obj.data if isinstance(obj, Blob) else None
        finally:
            repo.close()

    @staticmethod
    def _commit(repo: Repo, repository: RepositoryConfig, commit: str) -> Commit:
        key = ObjectID(commit.encode())
        if key not in repo.object_store:
            raise NotFound(
                f"commit {commit} of repository {repository.name} is not in the node's store: "
                "fetch it first (is it on the branch the plan names?)"
            )
        obj = repo.object_store[key]
        if not isinstance(obj, Commit):
            raise NotFound(f"{commit} in repository {repository.name} is not a commit")
        return obj


def _write_entry(repo: Repo, root: Path, raw_path: bytes, mode: int, sha: bytes) -> None:
    parts = raw_path.decode("utf-8", "surrogateescape").split("/")
    if any(p in ("", ".", "..", ".git") for p in parts) or raw_path.startswith(b"/"):
        raise GitError(f"refusing tree entry {raw_path!r}: it would escape the tree")
    target = root.joinpath(*parts)
    kind = mode & 0o170000
    if kind == 0o160000:  # submodule: not fetched, not needed to build
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    blob = repo.object_store[ObjectID(sha)]
    assert isinstance(blob, Blob)
    if kind == 0o120000:
        os.symlink(blob.data, target)
        return
    target.write_bytes(blob.data)
    target.chmod(0o755 if mode & 0o111 else 0o644)
