"""``sdp-reconcile authorize [--state DIR] [--json] BASE..HEAD`` as CI runs it: the console
script in a subprocess, on a real repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.access.conftest import AccessRepo
from tests.access.gitrepo import SANDBOX, Person

SCRIPT = Path(sys.executable).parent / "sdp-reconcile"


def run(repo: AccessRepo, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "authorize", *args], capture_output=True, text=True,
                          cwd=repo.root, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def _mixed_range(repo: AccessRepo, people: dict[str, Person]) -> tuple[str, str]:
    repo.replace(SANDBOX, "branch: feature/login-error", "branch: feature/rina")
    allowed = repo.commit(people["rina"], "rina deploys")
    refused = repo.commit(people["rina"], "rina removes", files={SANDBOX: None})
    return allowed, refused


def test_exit_0_when_every_change_is_allowed(repo: AccessRepo,
                                             people: dict[str, Person]) -> None:
    repo.replace(SANDBOX, "branch: feature/login-error", "branch: feature/rina")
    repo.commit(people["rina"], "rina deploys")

    result = run(repo, "--state", "state", f"{repo.base}..HEAD")

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == "authorized: every change of 1 commit is allowed\n"


def test_exit_1_with_one_line_per_refused_change(repo: AccessRepo,
                                                 people: dict[str, Person]) -> None:
    _, refused = _mixed_range(repo, people)

    result = run(repo, "--state", "state", f"{repo.base[:10]}..main")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"commit {refused[:7]} by rina@company.invalid (QA): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted to QA",
    ]
    assert result.stderr == ("refused: 1 change in 2 commits; 1 still in effect at HEAD; "
                             "left as they run: QA-LOGIN-ERROR\n")


def test_the_state_directory_comes_from_sdp_state(repo: AccessRepo,
                                                  people: dict[str, Person]) -> None:
    _mixed_range(repo, people)

    result = run(repo, "HEAD~1..HEAD", env={"SDP_STATE": str(repo.state)})

    assert result.returncode == 1
    assert "delete_sandbox is not granted to QA" in result.stdout


def test_head_alone_checks_from_the_root_commit(repo: AccessRepo,
                                                people: dict[str, Person]) -> None:
    _mixed_range(repo, people)

    result = run(repo, "--state", "state", "--json", "HEAD")

    document = json.loads(result.stdout)
    assert result.returncode == 1
    assert document["base"] is None
    assert [c["rules"] for c in document["commits"]] == ["none", "none", "access.yaml",
                                                         "access.yaml"]


def test_json_shape(repo: AccessRepo, people: dict[str, Person]) -> None:
    allowed, refused = _mixed_range(repo, people)

    result = run(repo, "--state", "state", "--json", f"{repo.base}..HEAD")

    assert result.returncode == 1
    document: dict[str, Any] = json.loads(result.stdout)
    assert set(document) == {"base", "head", "enforced", "allowed", "notice", "refusals",
                             "halted", "commits", "uncommitted", "stale", "sandboxes",
                             "files", "next_base"}
    assert (document["base"], document["head"]) == (repo.base, refused)
    assert document["enforced"] is True and document["allowed"] is False
    assert document["refusals"] == [
        f"commit {refused[:7]} by rina@company.invalid (QA): sandboxes/QA-LOGIN-ERROR.yaml: "
        "delete_sandbox is not granted to QA"]
    first, second = document["commits"]
    assert set(first) == {"commit", "parents", "author", "user", "roles", "signature", "rules",
                          "allowed", "changes"}
    assert (first["commit"], first["parents"], first["author"], first["user"],
            first["roles"], first["signature"], first["rules"], first["allowed"]) == (
        allowed, [repo.base], "rina@company.invalid", "rina", ["QA"], "not required",
        "access.yaml", True)
    assert first["changes"] == [{
        "file": "sandboxes/QA-LOGIN-ERROR.yaml", "aspect": "services.account.branch",
        "permission": "deploy",
        "description": "services.account.branch: feature/login-error → feature/rina",
        "sandbox": "QA-LOGIN-ERROR", "allowed": True, "role": "QA", "refusal": None,
        "outstanding": False,
    }]
    assert second["changes"][0]["outstanding"] is True
    assert second["changes"][0]["refusal"] == document["refusals"][0]
    assert document["sandboxes"] == {"QA-LOGIN-ERROR": {
        "authorised": False, "refusals": document["refusals"], "grants": []}}
    assert document["files"] == {"sandboxes/QA-LOGIN-ERROR.yaml": document["refusals"]}
    assert document["halted"] == document["uncommitted"] == document["stale"] == []
    assert document["next_base"] == repo.base


def test_an_unknown_revision_is_an_error_without_a_traceback(repo: AccessRepo) -> None:
    result = run(repo, "--state", "state", "nosuchbranch..HEAD")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: unknown revision 'nosuchbranch' in ")


def test_a_three_dot_range_is_refused_with_what_to_write(repo: AccessRepo) -> None:
    result = run(repo, "--state", "state", "main...HEAD")

    assert result.returncode == 1
    assert "give a range as BASE..HEAD (two dots)" in result.stderr


def test_a_state_directory_outside_git_is_an_error(tmp_path: Path, repo: AccessRepo) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    result = run(repo, "--state", str(plain), "HEAD")

    assert result.returncode == 1
    assert result.stderr == f"error: {plain} is not in a git repository with a commit: " \
        "authorize judges commits\n"


def test_a_pull_request_checked_in_a_clone_against_the_remote_branch(
        tmp_path: Path, repo: AccessRepo, people: dict[str, Person]) -> None:
    """What the Bitbucket step does: a full clone, the destination as origin/main."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo.root), str(clone)], check=True, timeout=60,
                   env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null"})
    pull_request = AccessRepo.__new__(AccessRepo)
    pull_request.root, pull_request.state = clone, clone / "state"
    pull_request.replace(SANDBOX, "branch: feature/login-error", "branch: feature/pr")
    pull_request.commit(people["vic"], "vic's pull request")

    result = run(pull_request, "--state", "state", "origin/main..HEAD")

    assert result.returncode == 1
    assert result.stdout.endswith("deploy is not granted to VIEWER\n")


def test_a_shallow_clone_says_to_fetch_the_full_history(
        tmp_path: Path, repo: AccessRepo, people: dict[str, Person]) -> None:
    repo.commit(people["rina"], "one more", files={"README.md": "x\n"})
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo.root}", str(clone)],
                   check=True, timeout=60, env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null"})

    result = subprocess.run([str(SCRIPT), "authorize", "--state", "state", "HEAD"],
                            capture_output=True, text=True, cwd=clone, timeout=60, check=False)

    assert result.returncode == 1
    assert "the clone is shallow; fetch the full history (Bitbucket Pipelines: 'clone: depth: " \
        "full')" in result.stderr
