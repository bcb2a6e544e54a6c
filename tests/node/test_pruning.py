"""Disk hygiene on a real agent: unused trees, builds and gateway trees go, GOCACHE is bounded.

Real git server, go, Docker engine. The agent prunes after each apply (``sdp_node.prune``);
``decide``, the pure part, is checked as a table below.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdp_node.config import Pruning
from sdp_node.mounts import ContainerMounts
from sdp_node.protocol import Credentials, RemoveContainer, StopContainer
from sdp_node.prune import Entry, decide, mounted
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get, wait_for
from tests.conftest import GO_CACHE
from tests.support.agents import AgentProcess, free_port
from tests.support.names import NAMES
from tests.support.plans import deploy, run, spec

pytestmark = pytest.mark.usefixtures("images")


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def test_the_agent_prunes_what_no_container_uses_and_bounds_gocache(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, tmp_path: Path,
) -> None:
    path, url = make_repo("account")
    one = commit_files(path, branch="main", message="1",
                       files=go_service_files(service="account", revision="main-1"))
    # Its own GOCACHE, since it is emptied here; a copy of the shared one, so that only the
    # build after the emptying starts cold.
    go_cache = tmp_path / "own-gocache"
    if GO_CACHE.is_dir():
        shutil.copytree(GO_CACHE, go_cache, symlinks=True)
    agent = make_agent(
        repositories=[{"name": "account", "url": url, "kind": "go", "image": images["micro"],
                       "health_timeout_seconds": 20}],
        go_cache=str(go_cache),
        pruning={"keep_recent": 0, "min_age_minutes": 0, "go_cache_max_mb": 0})
    client = agent.client()
    workspace = agent.workspace
    port, other_port = free_port(), free_port()

    def service(sandbox: str, commit: str, at: int) -> Any:
        return spec(sandbox=sandbox, service="account", repository="account", branch="main",
                    commit=commit, port=at)

    assert run(client, deploy(service("s1", one, port)), canary).ok
    # A build filled GOCACHE past its bound (0 MiB here): emptied after the apply.
    wait_for(lambda: True if go_cache.is_dir() and not files_in(go_cache) else None,
             what="GOCACHE emptied after the apply")
    # A stopped container's files are kept: starting it again needs them.
    assert run(client, deploy(service("s2", one, other_port)), canary).ok
    assert run(client, [StopContainer(step_id="stop-s2",
                                      container=NAMES.container("s2", "account"))], canary).ok

    ghost = workspace / "gateways" / "ghost" / ("a" * 40)
    leftovers = [ghost, workspace / "trees" / "account" / f".{'b' * 40}.0123abcd.tmp",
                 workspace / "builds" / "gone" / ("c" * 40)]
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / "file").write_text("left behind")

    two = commit_files(path, branch="main", message="2",
                       files=go_service_files(service="account", revision="main-2"))
    redeploy = run(client, deploy(service("s1", two, port)), canary)
    assert redeploy.ok, redeploy.results  # built again, with GOCACHE empty
    assert http_get(f"http://127.0.0.1:{port}/").json()["revision"] == "main-2"
    wait_for(lambda: True if not any(p.exists() for p in leftovers) else None,
             what="leftover trees, checkouts and builds pruned")
    assert not (workspace / "gateways" / "ghost").exists(), "an emptied group folder goes"
    assert not (workspace / "builds" / "gone").exists()
    for commit in (one, two):  # one: the stopped s2 mounts it; two: s1 runs it
        assert (workspace / "trees" / "account" / commit).is_dir()
        assert (workspace / "builds" / "account" / commit / "app-account").is_file()

    assert run(client, [RemoveContainer(step_id="rm-s2",
                                        container=NAMES.container("s2", "account"))], canary).ok
    wait_for(lambda: True if not (workspace / "trees" / "account" / one).exists() and not (
        workspace / "builds" / "account" / one).exists() else None,
        what="the trees and builds of a removed container pruned")
    assert (workspace / "trees" / "account" / two).is_dir()
    assert (workspace / "builds" / "account" / two / "app-account").is_file()
    assert http_get(f"http://127.0.0.1:{port}/").json()["revision"] == "main-2"


def test_pruning_can_be_turned_off(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
) -> None:
    agent = make_agent(repositories=[], pruning={"enabled": False, "min_age_minutes": 0})
    leftover = agent.workspace / "builds" / "gone" / ("c" * 40)
    leftover.mkdir(parents=True)
    assert run(agent.client(), [], canary).ok
    # One worker runs applies and their pruning in turn: once a second apply has finished,
    # the first one's pruning is over.
    assert run(agent.client(), [], canary).ok
    assert leftover.is_dir()


# -- decide, the pure part ---------------------------------------------------------------------

NOW = 1_000_000.0
HOUR = 3600.0


def entry(folder: str, group: str, name: str, age_hours: float) -> Entry:
    return Entry(Path("/w") / folder / group / name, folder, group, NOW - age_hours * HOUR)


TREES = [entry("trees", "account", f"c{i}", age_hours=i) for i in range(1, 6)]
"""c1 made an hour ago ... c5 five hours ago"""


@pytest.mark.parametrize(("settings", "in_use", "entries", "deleted"), [
    pytest.param(Pruning(keep_recent=2, min_age_minutes=0), {TREES[4].path}, TREES,
                 ["c3", "c4"], id="the two most recent unused kept, and what is mounted"),
    pytest.param(Pruning(keep_recent=0, min_age_minutes=150), set(), TREES,
                 ["c3", "c4", "c5"], id="nothing younger than min_age"),
    pytest.param(Pruning(keep_recent=1, min_age_minutes=0), set(),
                 [entry("trees", "account", "a1", 1), entry("trees", "account", "a2", 2),
                  entry("trees", "user", "u1", 3), entry("trees", "user", "u2", 4),
                  entry("builds", "account", "a1", 5), entry("builds", "account", "a2", 6)],
                 ["a2", "a2", "u2"], id="per repository, trees and builds apart"),
    pytest.param(Pruning(keep_recent=3, min_age_minutes=0), set(),
                 [entry("gateways", "qa", "g1", 1), entry("gateways", "qa", "g2", 2)],
                 ["g1", "g2"], id="gateway trees: none kept unmounted"),
    pytest.param(Pruning(keep_recent=3, min_age_minutes=0), set(),
                 [entry("trees", "account", ".c9.0123abcd.tmp", 1), *TREES[:1]],
                 [".c9.0123abcd.tmp"], id="an interrupted checkout goes, counted in no keep"),
])
def test_decide(settings: Pruning, in_use: set[Path], entries: list[Entry],
                deleted: list[str]) -> None:
    assert sorted(p.name for p in decide(entries, in_use, settings, NOW)) == sorted(deleted)


def test_a_mount_keeps_the_folders_above_it() -> None:
    found = mounted([ContainerMounts.from_summary(raw) for raw in (
        {"Names": ["/sandbox-qa-account"],
         "Mounts": [{"Source": "/w/builds/account/c1/app-account"}]},
        {"Id": "0123456789abcdef", "Mounts": None}, {})])
    assert Path("/w/builds/account/c1") in found
    decided = decide([entry("builds", "account", "c1", 5)], found,
                     Pruning(keep_recent=0, min_age_minutes=0), NOW)
    assert decided == []
