"""Fetching a repository's new heads as soon as a branch check sees them.

Before it plans, the reconciler asks the agent for a repository's branch heads
(``POST /v1/branches``); when a head moved, the deploy that follows would start with a fetch.
``Prefetcher.offer`` starts that fetch right after the branch check answers, so the commit is
usually in the store when the deploy arrives. Promises:

* only a repository this node has fetched before (its object store exists) is prefetched, and
  only when some returned head is missing from it: a branch check never clones a repository
  (a plan-only ``sdp-reconcile plan`` leaves a node's workspace as it was);
* at most one prefetch per repository at a time: an offer while one is queued or running
  starts none;
* prefetches run on a bounded pool (``WORKERS`` threads), never on a thread per request;
* a deploy never fetches beside a prefetch of its repository: before its own fetch it calls
  ``join``, which waits for a running prefetch (and drops one still queued: the deploy
  fetches at once itself), and a prefetch runs under the repository's fetch lock (the
  converger's ``KeyedLocks``, the one its deploys fetch under), so it also waits for a deploy
  already fetching; a deploy that joined finds its commit there, and ``fetched`` tells it
  who brought it;
* a failed prefetch is logged (the repository, never the credentials) and changes nothing:
  the deploy fetches as before and reports its own failure;
* the credentials are those of the branch check's request, kept in memory until the prefetch
  ends: never logged, written or put into exception text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sdp_node.config import RepositoryConfig
from sdp_node.errors import NodeError
from sdp_node.git import GitStore
from sdp_node.pool import KeyedLocks
from sdp_node.protocol import Credentials

log = logging.getLogger("sdp_node")

WORKERS = 2
"""prefetches running at once (of different repositories); more wait in the pool's queue,
which holds at most one per repository"""
REMEMBERED = 64
"""commits remembered per repository as brought by a prefetch (for the deploys' log lines)"""


class Prefetcher:
    def __init__(self, git: GitStore, fetches: KeyedLocks) -> None:
        self._git = git
        self._fetches = fetches
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="sdp-prefetch")
        self._lock = threading.Lock()
        self._pending: dict[str, Future[None]] = {}
        """repository -> its prefetch, queued or running"""
        self._brought: dict[str, dict[str, None]] = {}
        """repository -> the commits its prefetches fetched (or are fetching), oldest first"""

    def offer(self, repository: RepositoryConfig, heads: Iterable[str],
              credentials: Credentials) -> bool:
        """Start a background fetch of ``repository`` if it has a store here, some of
        ``heads`` (commit SHAs) are missing from it and no prefetch of it is pending; True
        when one was started. Returns at once, and never raises: the branch check answers
        whatever becomes of its prefetch."""
        try:
            if not self._git.has_store(repository):
                return False
            missing = self._git.missing(repository, heads)
        except Exception as e:  # a store it cannot read: the deploy's own fetch will say why
            log.warning("branch check: cannot read the store of %s (%s); no prefetch",
                        repository.name, type(e).__name__)
            return False
        if not missing:
            return False
        with self._lock:
            if repository.name in self._pending:
                return False
            try:
                future = self._pool.submit(self._run, repository, missing, credentials)
            except RuntimeError:  # the pool was closed: the agent is stopping
                return False
            self._pending[repository.name] = future
        future.add_done_callback(lambda _done: self._done(repository.name, future))
        return True

    def join(self, repository: RepositoryConfig) -> bool:
        """Wait for the running prefetch of ``repository``, if any (one still queued is
        dropped instead: the caller fetches sooner itself); True when one was waited for."""
        with self._lock:
            future = self._pending.get(repository.name)
        if future is None or future.cancel():
            return False
        wait([future])
        return True

    def fetched(self, repository: RepositoryConfig, commit: str) -> bool:
        """Whether ``commit`` is one a prefetch of ``repository`` fetched or is fetching (ask
        once the commit is in the store)."""
        with self._lock:
            return commit in self._brought.get(repository.name, {})

    def close(self) -> None:
        """Drop queued prefetches; a running one ends on its own (the network timeout)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, repository: RepositoryConfig, missing: set[str],
             credentials: Credentials) -> None:
        try:
            with self._fetches.hold(repository.name):
                if not self._git.has_store(repository):  # a fetch now would clone it
                    return
                wanted = self._git.missing(repository, missing)
                if not wanted:  # a deploy fetched them while this prefetch waited
                    return
                self._remember(repository, wanted)
                try:
                    self._git.fetch(repository, credentials,
                                    log=lambda line: log.info("branch check: %s", line))
                finally:
                    self._forget(repository, self._git.missing(repository, wanted))
        except NodeError as e:  # its text names the repository and URL, nothing more
            log.warning("branch check: prefetch of %s failed; its next deploy fetches itself: "
                        "%s", repository.name, e)
        except Exception as e:  # an unexpected error's text is not trusted to be logged
            log.warning("branch check: prefetch of %s failed (%s); its next deploy fetches "
                        "itself", repository.name, type(e).__name__)

    def _done(self, name: str, future: Future[None]) -> None:
        with self._lock:
            if self._pending.get(name) is future:
                del self._pending[name]

    def _remember(self, repository: RepositoryConfig, commits: set[str]) -> None:
        with self._lock:
            brought = self._brought.setdefault(repository.name, {})
            for commit in sorted(commits):
                brought.pop(commit, None)
                brought[commit] = None
            while len(brought) > REMEMBERED:
                del brought[next(iter(brought))]

    def _forget(self, repository: RepositoryConfig, commits: set[str]) -> None:
        with self._lock:
            brought = self._brought.get(repository.name, {})
            for commit in commits:
                brought.pop(commit, None)


__all__ = ["Prefetcher"]
