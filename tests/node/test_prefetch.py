"""The branch check's prefetch (``sdp_node.prefetch``), through a real agent, a real git server
with Basic auth and real deploys.

A branch check (``POST /v1/branches``) that sees a head missing from a cloned repository's store
fetches it in the background, so the deploy that follows fetches nothing; it never clones a
repository; a refused prefetch changes nothing and leaks no credential.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dulwich.objects import ObjectID
from dulwich.repo import Repo

from sdp_node.protocol import Credentials, Secret
from sdp_testbed.gitserver import GitServer
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get, wait_for
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.node.test_credentials import find_canary
from tests.support.agents import AgentProcess, free_port
from tests.support.plans import Outcome, deploy, run, spec

OWN_FETCH = re.compile(r"fetched \d+ branch\(es\) of ")
"""the log line of a fetch (``GitStore.fetch``)"""


def go_repo(name: str, url: str, images: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "url": url, "kind": "go", "image": images["micro"],
            "health_timeout_seconds": 20}


def store(agent: AgentProcess, repository: str) -> Path:
    return agent.workspace / "repos" / f"{repository}.git"


def in_store(agent: AgentProcess, repository: str, commit: str) -> bool:
    if not (store(agent, repository) / "objects").is_dir():
        return False
    repo = Repo(str(store(agent, repository)))
    try:
        return ObjectID(commit.encode()) in repo.object_store
    finally:
        repo.close()


def deploy_account(agent: AgentProcess, commit: str, port: int,
                   credentials: Credentials) -> Outcome:
    outcome = run(agent.client(), deploy(spec(sandbox="s1", service="account",
                                              repository="account", branch="main",
                                              commit=commit, port=port)), credentials)
    assert outcome.ok, (outcome.results, outcome.logs())
    return outcome


def revision(port: int) -> str:
    got = http_get(f"http://127.0.0.1:{port}/")
    assert got.status == 200, got.text
    return str(got.json()["revision"])


def push(path: Path, revision_: str) -> str:
    return commit_files(path, branch="main", message=revision_,
                        files=go_service_files(service="account", revision=revision_))


def test_a_branch_check_fetches_a_moved_head_so_the_deploy_fetches_nothing(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials,
) -> None:
    path, url = make_repo("account")
    first = push(path, "main-1")
    agent = make_agent(repositories=[go_repo("account", url, images)])
    client = agent.client()
    port = free_port()
    cloning = deploy_account(agent, first, port, canary)
    assert any(OWN_FETCH.search(line) for line in cloning.logs())

    # The branch check sees the new head; its prefetch brings it before any deploy asks.
    second = push(path, "main-2")
    assert client.branches("account", canary)["main"] == second
    wait_for(lambda: in_store(agent, "account", second), what="the prefetch of main-2")
    prefetched = deploy_account(agent, second, port, canary)
    assert revision(port) == "main-2"
    logs = prefetched.logs()
    assert not any(OWN_FETCH.search(line) for line in logs), logs
    assert any(f"commit {second[:12]} is already in the node's store (fetched by the branch "
               "check)" in line for line in logs), logs

    # A deploy sent right after the branch check joins its prefetch (waits for it, or finds
    # its commit already there) and fetches nothing itself either.
    third = push(path, "main-3")
    assert client.branches("account", canary)["main"] == third
    joined = deploy_account(agent, third, port, canary)
    assert revision(port) == "main-3"
    logs = joined.logs()
    assert not any(OWN_FETCH.search(line) for line in logs), logs
    assert any(f"commit {third[:12]}" in line and "fetched by the branch check" in line
               for line in logs), logs
    # The same heads once more: nothing is missing, so nothing is fetched.
    assert client.branches("account", canary)["main"] == third
    agent.stop()
    fetches = [line for line in agent.log_path.read_text().splitlines()
               if "branch check: fetched" in line]
    assert len(fetches) == 2, fetches


def test_a_branch_check_of_a_repository_never_cloned_clones_nothing(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials,
) -> None:
    account_path, account_url = make_repo("account")
    billing_path, billing_url = make_repo("billing")
    first = push(account_path, "main-1")
    billing = commit_files(billing_path, branch="main", message="1",
                           files=go_service_files(service="billing", revision="1"))
    agent = make_agent(repositories=[go_repo("account", account_url, images),
                                     go_repo("billing", billing_url, images)])
    client = agent.client()
    deploy_account(agent, first, free_port(), canary)

    # billing's branch check comes first; account's prefetch, after it on the same pool,
    # is the sign that the agent has done what it was going to do about billing.
    second = push(account_path, "main-2")
    assert client.branches("billing", canary) == {"main": billing}
    assert client.branches("account", canary)["main"] == second
    wait_for(lambda: in_store(agent, "account", second), what="the prefetch of account")
    assert not store(agent, "billing").exists()
    assert "billing" not in agent.log_path.read_text()


def test_a_refused_prefetch_changes_nothing_and_leaks_no_credential(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    git_server: GitServer, images: dict[str, str], canary: Credentials,
) -> None:
    # A remote that answers the branch check with these credentials and refuses their fetch.
    list_only = CANARY_PASSWORD + "-list-only"
    wrong = Credentials(username=Secret(CANARY_USER), password=Secret(list_only))
    path, _url = make_repo("account")
    first = push(path, "main-1")
    with GitServer(git_server.root, username=CANARY_USER, password=CANARY_PASSWORD,
                   list_only_password=list_only) as remote:
        agent = make_agent(repositories=[go_repo("account", remote.repo_url(path.stem),
                                                 images)])
        port = free_port()
        deploy_account(agent, first, port, canary)

        second = push(path, "main-2")
        assert agent.client().branches("account", wrong)["main"] == second
        failure = wait_for(
            lambda: next((line for line in agent.log_path.read_text().splitlines()
                          if "prefetch of account failed" in line), None),
            what="the refused prefetch's log line")
        assert "authentication failed for repository account" in failure, failure
        assert not in_store(agent, "account", second)

        # The deploy fetches itself, with the plan's credentials, as without a prefetch.
        fetched = deploy_account(agent, second, port, canary)
        assert any(OWN_FETCH.search(line) for line in fetched.logs()), fetched.logs()
        assert revision(port) == "main-2"
        agent.stop()  # flush and close the agent's log
    log = agent.log_path.read_bytes()
    assert find_canary(log) == []
    assert list_only.encode() not in log
    assert agent.token.encode() not in log
