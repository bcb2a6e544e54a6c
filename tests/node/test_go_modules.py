"""Offline module resolution: vendor/, the node's module cache, and clear errors otherwise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdp_node.protocol import Credentials
from sdp_testbed.go_service import go_service_files
from sdp_testbed.gomodcache import build_module_cache
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get
from tests.support.agents import AgentProcess, free_port
from tests.support.plans import deploy, run, spec


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_module_cache(tmp_path_factory.mktemp("gomodcache"))


def _deploy(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, files: dict[str, bytes],
    **go: Any,
) -> tuple[Any, int]:
    path, url = make_repo("account")
    commit = commit_files(path, branch="main", files=files, message="x")
    repository = {"name": "account", "url": url, "kind": "go", "image": images["micro"],
                  "health_timeout_seconds": 20, "go": go}
    client = make_agent(repositories=[repository]).client()
    port = free_port()
    outcome = run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                      branch="main", commit=commit, port=port)), canary)
    return outcome, port


def test_builds_from_vendor(make_agent, make_repo, images, canary) -> None:  # type: ignore[no-untyped-def]
    files = go_service_files(service="account", revision="v", dependency="vendor")
    outcome, port = _deploy(make_agent, make_repo, images, canary, files)
    assert outcome.ok, outcome.last()
    assert http_get(f"http://127.0.0.1:{port}/").json()["greeting"] == "hello, account"


def test_builds_from_the_node_module_cache_with_goproxy_off(  # type: ignore[no-untyped-def]
    make_agent, make_repo, images, canary, module_cache
) -> None:
    files = go_service_files(service="account", revision="m", dependency="modcache")
    outcome, port = _deploy(make_agent, make_repo, images, canary, files,
                            module_cache=str(module_cache), proxy="off")
    assert outcome.ok, outcome.last()
    assert http_get(f"http://127.0.0.1:{port}/").json()["greeting"] == "hello, account"


def test_a_module_in_neither_place_is_named(  # type: ignore[no-untyped-def]
    make_agent, make_repo, images, canary, tmp_path
) -> None:
    files = go_service_files(service="account", revision="m", dependency="modcache")
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    outcome, _ = _deploy(make_agent, make_repo, images, canary, files, module_cache=str(empty))
    result = outcome.last()
    assert not result.ok and result.stage == "go build"
    assert "example.invalid/greet is neither in vendor/ nor in the node's module cache" in \
        result.message, result.message
    assert "GOPROXY=off" in result.message


@pytest.mark.parametrize(
    ("go_mod_extra", "expected"),
    [
        ("go 1.22.0\n", "go.mod says 'go 1.22.0'"),
        ("go 1.19\ntoolchain go1.22.1\n", "go.mod has 'toolchain go1.22.1'"),
        ("go 1.99\n", "go.mod says 'go 1.99'"),
    ],
)
def test_a_go_mod_that_needs_a_newer_go_is_refused_clearly(  # type: ignore[no-untyped-def]
    make_agent, make_repo, images, canary, go_mod_extra: str, expected: str
) -> None:
    files = go_service_files(service="account", revision="x")
    module_line = files["go.mod"].decode().splitlines()[0]
    files["go.mod"] = f"{module_line}\n\n{go_mod_extra}".encode()
    outcome, _ = _deploy(make_agent, make_repo, images, canary, files)
    result = outcome.last()
    assert not result.ok and result.stage == "go build"
    assert expected in result.message, result.message
    assert "this node has Go" in result.message or "cannot read" in result.message
