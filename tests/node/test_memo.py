"""The agent's bounded memo (``sdp_node/memo.py``): once per key, least recently used out first,
failures not kept, and safe under threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from dulwich.repo import Repo

from sdp_node import routes as routes_module
from sdp_node.config import load_config
from sdp_node.containers import Engine
from sdp_node.gateway import GatewayFiles
from sdp_node.git import GitStore
from sdp_node.memo import BoundedMemo
from sdp_node.routes import COMMITS_KEPT, GatewayRoutes
from sdp_testbed.repos import commit_files

ROUTES_FILE = "application/config/production/config.php"


def test_a_value_is_computed_once_and_the_least_recently_used_goes_first() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    calls: list[str] = []

    def compute(key: str) -> int:
        calls.append(key)
        return len(calls)

    assert memo.get("a", lambda: compute("a")) == 1
    assert memo.get("a", lambda: compute("a")) == 1 and calls == ["a"]
    memo.get("b", lambda: compute("b"))
    memo.get("a", lambda: compute("a"))  # a is now the most recently used
    memo.get("c", lambda: compute("c"))  # past the limit: b goes, not a
    assert "a" in memo and "c" in memo and "b" not in memo and len(memo) == 2
    assert memo.get("b", lambda: compute("b")) == 4 and calls == ["a", "b", "c", "b"]


def test_a_failed_computation_keeps_nothing() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(4)

    def fail() -> int:
        raise LookupError("no such file at that commit")

    with pytest.raises(LookupError):
        memo.get("a", fail)
    assert "a" not in memo and memo.get("a", lambda: 7) == 7
    with pytest.raises(ValueError, match="at least one"):
        BoundedMemo(0)


def test_threads_never_see_more_than_the_limit_or_a_wrong_value() -> None:
    memo: BoundedMemo[int, int] = BoundedMemo(10)
    wrong: list[tuple[int, int]] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        start.wait()
        for step in range(2000):
            key = (seed * 7 + step) % 50
            value = memo.get(key, lambda k=key: k * k)  # type: ignore[misc]
            if value != key * key:
                wrong.append((key, value))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == [] and len(memo) == 10


def test_the_agent_keeps_the_routes_of_a_bounded_number_of_gateway_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The routes of every gateway commit ever asked about were kept for the agent's lifetime.
    monkeypatch.setattr(routes_module, "COMMITS_KEPT", 4)  # the real bound is 1024; same code
    workspace = tmp_path / "ws"
    config_file = tmp_path / "node.yaml"
    config_file.write_text(json.dumps({
        "name": "gateway-1", "type": "GATEWAY", "installation": "memo",
        "token": {"env": "SDP_TEST_TOKEN"}, "workspace": str(workspace),
        "repositories": [{"name": "erangel", "url": "http://127.0.0.1:1/erangel.git",
                          "kind": "php"}],
    }))
    config = load_config(config_file)
    git = GitStore(workspace)
    store = git.store_path(config.repository("erangel"))
    Repo.init_bare(str(store), mkdir=True).close()
    commits = [commit_files(store, branch="develop", message=f"routes {n}", files={
        ROUTES_FILE: f"<?php\n$config['account_url'] = 'http://account-{n}.invalid';\n".encode()
    }) for n in range(6)]
    engine = Engine(config)  # a docker client, never asked: the routes come from git
    gateway = GatewayRoutes(config, engine, git, GatewayFiles(workspace))
    for n, commit in enumerate(commits):
        assert gateway.committed_routes("erangel", commit) == {
            "account": f"http://account-{n}.invalid"}
    kept = gateway._committed_routes
    assert len(kept) == 4
    assert ("erangel", commits[0]) not in kept and ("erangel", commits[-1]) in kept
    # One dropped is read again from git, right, when it is asked about again.
    assert gateway.committed_routes("erangel", commits[0]) == {
        "account": "http://account-0.invalid"}
    engine.client.close()
    assert COMMITS_KEPT == 1024
