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
* a fetch tells the remote every branch head the store already has (``_Store``), so it
  downloads only what is new: without that, each fetch of a store brought the repository's
  whole history again, as a new pack;
* the store stays at a few packs: after a fetch that leaves more than ``packs.LIMIT``, the
  small ones are merged into one in the background (``packs``), at a low CPU priority and
  beside readers and fetches; the packs it replaced are removed only while no reader or
  fetch has the store open;
* a tree is written to a temporary directory and renamed into place, so a directory that
  exists is complete; entries that would escape the tree (``..``, absolute, ``.git``) are
  refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dulwich.client import HTTPUnauthorized
from dulwich.errors import GitProtocolError, HangupException
from dulwich.object_store import ObjectStoreGraphWalker
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from sdp_node import packs
from sdp_node.config import RepositoryConfig
from sdp_node.errors import AuthenticationFailed, GitError, NotFound
from sdp_node.gitremote import NETWORK_TIMEOUT as NETWORK_TIMEOUT
from sdp_node.gitremote import dulwich_credentials as dulwich_credentials
from sdp_node.gitremote import remote_client
from sdp_node.protocol import Credentials

HEADS = b"refs/heads/"
REMOTE_HEADS = b"refs/remotes/origin/"

Log = Callable[[str], None]
MERGE_NICENESS = 10
log = logging.getLogger("sdp_node")


class _Store(Repo):
    """A repository's shared object store, whose branches live under ``refs/remotes/origin``.

    What a fetch tells the remote it has: dulwich offers the target's ``refs/heads`` and
    every ancestor of them. A store has no ``refs/heads``, so the remote sent every object
    again on every fetch; and over HTTP, where there is no back-and-forth, dulwich would walk
    and send the whole history as "have" lines each time. The store offers its branch heads
    alone: the remote sends what they do not reach, which for a pushed branch is the new
    commits. (A head the remote no longer knows, after a force-push, just brings more.)
    """

    def get_graph_walker(self, heads: list[ObjectID] | None = None) -> ObjectStoreGraphWalker:
        if heads is None:
            heads = [sha for sha in self.refs.as_dict(Ref(REMOTE_HEADS.rstrip(b"/"))).values()
                     if sha in self.object_store]
        return ObjectStoreGraphWalker(heads, lambda _sha: [], shallow=self.get_shallow(),
                                      update_shallow=self.update_shallow)


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


class _Readers:
    """Many readers (and fetches) of a store at once, or the removal of merged packs alone.
    A removal that waits holds back new readers, so a busy node cannot put it off forever."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._reading = 0
        self._merging = False
        self._waiting = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._merging and not self._waiting)
            self._reading += 1
        try:
            yield
        finally:
            with self._changed:
                self._reading -= 1
                self._changed.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            self._waiting = True
            self._changed.wait_for(lambda: not self._merging and self._reading == 0)
            self._waiting = False
            self._merging = True
        try:
            yield
        finally:
            with self._changed:
                self._merging = False
                self._changed.notify_all()


class GitStore:
    """The object stores and commit trees of one node's repositories."""

    def __init__(self, workspace: Path) -> None:
        self._repos = workspace / "repos"
        self._repos.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._readers: dict[str, _Readers] = {}
        self._merges: dict[str, threading.Thread] = {}
        self._guard = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        """A repository's writer lock: one fetch (and its pack merge) at a time."""
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _reading(self, name: str) -> _Readers:
        with self._guard:
            return self._readers.setdefault(name, _Readers())

    def store_path(self, repository: RepositoryConfig) -> Path:
        return self._repos / f"{repository.name}.git"

    def _open(self, repository: RepositoryConfig) -> Repo:
        path = self.store_path(repository)
        if not (path / "objects").is_dir():
            path.mkdir(parents=True, exist_ok=True)
            Repo.init_bare(str(path)).close()
        return _Store(str(path))

    @contextmanager
    def _opened(self, repository: RepositoryConfig) -> Iterator[Repo]:
        """The store of ``repository`` (created if missing), open while it is held shared
        with other readers and fetches: a pack merge's removal waits for it to close."""
        with self._reading(repository.name).shared():
            repo = self._open(repository)
            try:
                yield repo
            finally:
                repo.close()

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
        with self._opened(repository) as repo:
            store = repo.object_store
            return {
                commit for commit in wanted
                if (key := ObjectID(commit.encode())) not in store
                or not isinstance(store[key], Commit)
            }

    def fetch(
        self, repository: RepositoryConfig, credentials: Credentials | None, *, log: Log
    ) -> dict[str, str]:
        """Fetch every branch into the shared store; return branch -> SHA as fetched."""
        client, path = remote_client(repository.url, credentials)
        with self._lock(repository.name), self._opened(repository) as repo:
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
            compact = packs.needs_consolidation(repo)
        if compact:
            self._merge_later(repository)
        return heads

    def settle(self, repository: RepositoryConfig) -> None:
        """Wait for the running pack merge of ``repository``, if any (tests, shutdown)."""
        with self._guard:
            merge = self._merges.get(repository.name)
        if merge is not None:
            merge.join()

    def _merge_later(self, repository: RepositoryConfig) -> None:
        with self._guard:
            running = self._merges.get(repository.name)
            if running is not None and running.is_alive():
                return
            merge = threading.Thread(target=self._merge, args=(repository,), daemon=True,
                                     name=f"sdp-packs-{repository.name}")
            self._merges[repository.name] = merge
        merge.start()

    def _merge(self, repository: RepositoryConfig) -> None:
        """Merge the store's small packs (``_merge_later`` runs one per repository at a time)."""
        with contextlib.suppress(OSError):  # best effort: it yields the CPU to deploys
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MERGE_NICENESS)
        started = time.monotonic()
        try:
            with self._opened(repository) as repo:
                replaced = packs.merge_small_packs(repo)
            if replaced:
                with self._reading(repository.name).alone():
                    packs.remove_packs(replaced)
        except Exception as e:  # the store is as it was, plus perhaps one more pack
            log.warning("merging the packs of %s failed (%s); the next fetch tries again",
                        repository.name, type(e).__name__)
            return
        log.info("merged %d packs of %s in %.2f s", len(replaced), repository.name,
                 time.monotonic() - started)

    def checkout(self, repository: RepositoryConfig, commit: str, dest: Path) -> bool:
        """Write ``commit``'s tree to ``dest``; False when ``dest`` already holds it."""
        if dest.is_dir():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
        with self._opened(repository) as repo:
            try:
                tree_id = self._commit(repo, repository, commit).tree
                staging.mkdir()
                for entry in repo.object_store.iter_tree_contents(tree_id):
                    _write_entry(repo, staging, entry.path, entry.mode, entry.sha)
                os.replace(staging, dest)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return True

    def read_file(self, repository: RepositoryConfig, commit: str, path: str) -> bytes | None:
        """The content of ``path`` at ``commit``, or None when it is not a file there."""
        with self._opened(repository) as repo:
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
