"""A repository's store over many fetches (sdp_node/git.py, sdp_node/packs.py): through the
real Basic-auth git server over HTTP, as a node deploys push after push.

A fetch brings only what is new; the store stays at a few packs (merged in the background);
nothing is lost by a merge, not even a commit that a force-push left unreachable; readers
working through merges never fail; a ``.keep`` pack is left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from sdp_node import packs
from sdp_node.config import RepositoryConfig
from sdp_node.git import GitStore
from sdp_node.protocol import Credentials
from sdp_testbed.repos import commit_files

FILES = {f"pkg/f{i}.go": f"package pkg // file {i}\n".encode() * 30 for i in range(30)}


def quiet(_line: str) -> None:
    pass


@pytest.fixture
def repo(make_repo: Callable[[str], tuple[Path, str]]) -> tuple[Path, RepositoryConfig]:
    path, url = make_repo("packs")
    commit_files(path, branch="main", files=FILES, message="first")
    return path, RepositoryConfig(name="packs", url=url, kind="go", image="micro")


def push(path: Path, index: int, *, branch: str = "main", base: str | None = None) -> str:
    return commit_files(path, branch=branch, base=base, message=f"change {index}",
                        files={f"pkg/f{index % 30}.go": f"package pkg // {index}\n".encode()})


def pack_sizes(store: GitStore, config: RepositoryConfig) -> list[int]:
    repo = Repo(str(store.store_path(config)))
    try:
        return sorted(len(pack) for pack in repo.object_store.packs)
    finally:
        repo.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GitStore]:
    yield GitStore(tmp_path / "workspace")


def test_a_fetch_brings_only_the_new_objects(store: GitStore, canary: Credentials,
                                             repo: tuple[Path, RepositoryConfig]) -> None:
    path, config = repo
    store.fetch(config, canary, log=quiet)
    first = pack_sizes(store, config)
    assert first == [33]  # 30 blobs, the trees of pkg and of the root, the commit
    push(path, 1)
    store.fetch(config, canary, log=quiet)
    # The new commit, its two trees and one blob (the remote was told what the store has;
    # before, each fetch brought the whole history again).
    assert pack_sizes(store, config) == [4, 33]


def test_the_store_stays_at_a_few_packs_and_keeps_every_commit(
        store: GitStore, canary: Credentials, repo: tuple[Path, RepositoryConfig],
        tmp_path: Path) -> None:
    path, config = repo
    commits = []
    for index in range(3 * packs.LIMIT):
        commits.append(push(path, index))
        store.fetch(config, canary, log=quiet)
        store.settle(config)
        assert len(pack_sizes(store, config)) <= packs.LIMIT + 1
    assert len(pack_sizes(store, config)) < packs.LIMIT  # merges did happen
    assert store.missing(config, commits) == set()
    assert store.checkout(config, commits[0], tmp_path / "first")
    assert (tmp_path / "first" / "pkg" / "f0.go").read_bytes() == b"package pkg // 0\n"
    assert store.read_file(config, commits[-1], f"pkg/f{(len(commits) - 1) % 30}.go") == \
        f"package pkg // {len(commits) - 1}\n".encode()


def test_a_commit_a_force_push_left_behind_survives_the_merges(
        store: GitStore, canary: Credentials, repo: tuple[Path, RepositoryConfig],
        tmp_path: Path) -> None:
    path, config = repo
    store.fetch(config, canary, log=quiet)
    left_behind = push(path, 999, branch="feature", base="main")
    store.fetch(config, canary, log=quiet)
    # The branch is force-pushed to another line: the running commit is no branch's any more.
    redo = commit_files(path, branch="redo", base="main", files={"other": b"x"}, message="redo")
    with Repo(str(path)) as remote:
        remote.refs[Ref(b"refs/heads/feature")] = ObjectID(redo.encode())
        del remote.refs[Ref(b"refs/heads/redo")]
    for index in range(2 * packs.LIMIT):
        push(path, index)
        store.fetch(config, canary, log=quiet)
        store.settle(config)
    assert len(pack_sizes(store, config)) < packs.LIMIT
    assert store.has_commit(config, left_behind)
    assert store.checkout(config, left_behind, tmp_path / "left-behind")
    assert (tmp_path / "left-behind" / "pkg" / "f9.go").read_bytes() == b"package pkg // 999\n"


def test_readers_work_through_merges(store: GitStore, canary: Credentials,
                                     repo: tuple[Path, RepositoryConfig],
                                     tmp_path: Path) -> None:
    path, config = repo
    first = store.fetch(config, canary, log=quiet)["main"]
    failures: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                assert store.read_file(config, first, "pkg/f1.go") == FILES["pkg/f1.go"]
                assert not store.missing(config, [first])
                reads += 1
            except BaseException as e:  # reported below
                failures.append(e)
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for index in range(3 * packs.LIMIT):
            push(path, index)
            store.fetch(config, canary, log=quiet)
        store.settle(config)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert reads > 0
    assert len(pack_sizes(store, config)) <= packs.LIMIT + 1


def test_a_kept_pack_is_never_merged(store: GitStore, canary: Credentials,
                                     repo: tuple[Path, RepositoryConfig]) -> None:
    path, config = repo
    store.fetch(config, canary, log=quiet)
    push(path, 1)
    store.fetch(config, canary, log=quiet)
    repo_ = Repo(str(store.store_path(config)))
    try:
        small = min(repo_.object_store.packs, key=len)
        small.keep(b"kept by an administrator")
        kept = Path(str(small.index.path)).with_suffix(".pack")  # type: ignore[attr-defined]
    finally:
        repo_.close()
    for index in range(2, 2 * packs.LIMIT + 2):
        push(path, index)
        store.fetch(config, canary, log=quiet)
        store.settle(config)
    assert kept.exists()
    assert 4 in pack_sizes(store, config)
