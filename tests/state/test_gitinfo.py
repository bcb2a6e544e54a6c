"""The state repository's revision and authors (sdp_reconciler/state/gitinfo.py), on real
checkouts made with the git CLI: the revision git itself reports, however the checkout is
laid out, and without importing dulwich for an ordinary one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sdp_reconciler.state.gitinfo import StateRepository
from tests.support.gitcli import GitCli

Git = Callable[..., str]


@pytest.fixture
def git(tmp_path: Path, git_cli: str) -> Git:
    """``git(folder, *args)``: the git CLI in ``folder``, its output stripped."""
    cli = GitCli(tmp_path / "home", "ana", "unused")
    return lambda folder, *args: cli.git(*args, cwd=folder).strip()


@pytest.fixture
def checkout(tmp_path: Path, git: Git) -> Path:
    folder = tmp_path / "state-repo"
    folder.mkdir()
    git(folder, "init", "-q", "-b", "main")
    (folder / "state" / "sandboxes").mkdir(parents=True)
    (folder / "state" / "sandboxes" / "qa.yaml").write_text("sandbox: QA\n")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "first")
    (folder / "state" / "sandboxes" / "qa.yaml").write_text("sandbox: QA\n# two\n")
    git(folder, "commit", "-q", "-am", "second")
    return folder


def revision(folder: Path) -> str | None:
    repository = StateRepository(folder)
    try:
        return repository.revision
    finally:
        repository.close()


def test_the_revision_is_gits_head_from_the_top_or_a_subfolder(checkout: Path, git: Git) -> None:
    head = git(checkout, "rev-parse", "HEAD")
    assert revision(checkout) == head
    assert revision(checkout / "state") == head


def test_packed_refs_and_a_detached_head(checkout: Path, git: Git) -> None:
    git(checkout, "pack-refs", "--all")
    assert not (checkout / ".git" / "refs" / "heads" / "main").exists()
    assert revision(checkout / "state") == git(checkout, "rev-parse", "HEAD")
    first = git(checkout, "rev-parse", "HEAD~1")
    git(checkout, "checkout", "-q", "--detach", first)
    assert revision(checkout / "state") == first


def test_a_worktree_and_its_author(checkout: Path, tmp_path: Path, git: Git) -> None:
    worktree = tmp_path / "worktree"
    git(checkout, "worktree", "add", "-q", "--detach", str(worktree), "HEAD~1")
    assert (worktree / ".git").is_file()
    repository = StateRepository(worktree / "state")
    try:
        assert repository.revision == git(checkout, "rev-parse", "HEAD~1")
        authorship = repository.authorship(worktree / "state" / "sandboxes" / "qa.yaml")
        assert (authorship.author, authorship.uncommitted) == (
            "Achmad <achmad@example.invalid>", False)
    finally:
        repository.close()


def test_no_commit_yet_and_no_repository(tmp_path: Path, git: Git) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q", "-b", "main")
    assert revision(fresh) is None
    outside = tmp_path / "plain" / "state"
    outside.mkdir(parents=True)
    assert revision(outside) is None
    assert StateRepository(outside).authorship(outside / "x.yaml").author is None


def test_the_revision_alone_imports_no_dulwich(checkout: Path, git: Git) -> None:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from sdp_reconciler.state.gitinfo import StateRepository\n"
        f"repository = StateRepository(Path({str(checkout / 'state')!r}))\n"
        "revision = repository.revision\n"
        "dulwich = sorted(m for m in sys.modules if m.startswith('dulwich'))\n"
        "print(json.dumps({'revision': revision, 'dulwich': dulwich}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert json.loads(done.stdout) == {"revision": git(checkout, "rev-parse", "HEAD"),
                                       "dulwich": []}


def test_symbolic_refs_are_followed_as_git_does(checkout: Path, git: Git) -> None:
    git(checkout, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    git(checkout, "symbolic-ref", "HEAD", "refs/heads/alias")
    assert revision(checkout) == git(checkout, "rev-parse", "HEAD")
    git(checkout, "pack-refs", "--all")  # main packed, the alias still a loose symbolic ref
    assert revision(checkout) == git(checkout, "rev-parse", "HEAD")


def test_a_head_that_leads_outside_refs_or_in_a_loop_has_no_revision(
    checkout: Path, tmp_path: Path
) -> None:
    git_dir = checkout / ".git"
    canary = tmp_path / "canary"
    canary.write_text("0123456789abcdef0123456789abcdef01234567\n")  # looks like an object id
    for target in ("../../canary", "refs/../../../canary", str(canary), "HEAD",
                   "refs/heads/a\x00b"):
        (git_dir / "HEAD").write_text(f"ref: {target}\n")
        assert revision(checkout) is None, target
    (git_dir / "refs" / "heads" / "a").write_text("ref: refs/heads/b\n")
    (git_dir / "refs" / "heads" / "b").write_text("ref: refs/heads/a\n")
    (git_dir / "HEAD").write_text("ref: refs/heads/a\n")
    assert revision(checkout) is None
    (git_dir / "HEAD").write_text("not a ref\n")
    assert revision(checkout) is None
