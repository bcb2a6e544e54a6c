"""Shared fixtures: the real Docker engine, a real git server with Basic auth, real agents.

Nothing here is a fake. A missing dependency (no Docker engine, no image) fails the test with
the command that fixes it; it is never skipped, because CI (.ci/run) installs and starts all of
it. Everything a test starts is stopped by pid or removed by its ``sdp.instance`` label.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sdp_node.protocol import Credentials, Secret
from sdp_testbed.gitserver import GitServer
from sdp_testbed.images import IMAGE_TAGS, ensure_images
from sdp_testbed.repos import init_bare
from tests.support.agents import AgentProcess, cleanup_instance
from tests.support.ports import release_lanes

# The canary: a password with every character that tends to break quoting or URLs, and
# non-ASCII inside latin-1 ('é') and beyond it ('€'), which the git server decodes as UTF-8.
CANARY_USER = "sdp-canary-user"
CANARY_PASSWORD = "Pa$$:w@rd%^/é€-canary"
IMAGE_CACHE = Path(os.environ.get("SDP_TESTBED_CACHE", "/var/cache/sdp-testbed"))
GO_CACHE = Path(os.environ.get("SDP_TEST_GOCACHE", str(IMAGE_CACHE / "gocache")))


INSTALLED_BY_CI = {"php": "php-cli", "composer": "composer", "git": "git", "go": "golang-go"}


def require(tool: str) -> str:
    """The tool's path; a missing one fails the test (CI installs it), never skips it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: apt-get install -y {INSTALLED_BY_CI[tool]} "
                    "(bash scripts/setup and .ci/run do)")
    return path


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's end: a controller frees the port lane its xdist workers held in its name."""
    if not hasattr(config, "workerinput"):
        release_lanes()


@pytest.fixture(scope="session")
def php() -> str:
    return require("php")


@pytest.fixture(scope="session")
def composer() -> str:
    return require("composer")


@pytest.fixture(scope="session")
def git_cli() -> str:
    return require("git")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as e:
        pytest.fail(f"no Docker engine answers ({e}); start one with: bash .ci/start-dockerd")
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    """Test runtime images (micro: busybox; php-cli), built with docker import if missing."""
    return ensure_images(["micro", "php-cli"], cache_dir=IMAGE_CACHE)


@pytest.fixture(scope="session")
def apache_image(docker_client: docker.DockerClient) -> str:
    """The debootstrap Apache+PHP image (.ci/run starts building it first, in the background)."""
    return ensure_images(["php-apache"], cache_dir=IMAGE_CACHE)["php-apache"]


@pytest.fixture(scope="session")
def canary() -> Credentials:
    return Credentials(username=Secret(CANARY_USER), password=Secret(CANARY_PASSWORD))


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    root = tmp_path_factory.mktemp("git")
    server = GitServer(root, username=CANARY_USER, password=CANARY_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_repo(git_server: GitServer) -> Callable[[str], tuple[Path, str]]:
    """A fresh bare repository on the git server: (path, URL)."""

    def make(name: str) -> tuple[Path, str]:
        remote = f"{name}-{uuid.uuid4().hex[:8]}"
        path = git_server.repo_path(remote)
        init_bare(path)
        return path, git_server.repo_url(remote)

    return make


@pytest.fixture
def installation(docker_client: docker.DockerClient) -> Iterator[str]:
    """A fresh SDP installation name; its containers and networks are removed afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    cleanup_instance(docker_client, name)


@pytest.fixture
def make_agent(
    tmp_path: Path, installation: str, images: dict[str, str]
) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def make(
        *, name: str = "micro-1", node_type: str = "MICRO",
        repositories: list[dict[str, Any]], start: bool = True, **settings: Any,
    ) -> AgentProcess:
        settings.setdefault("go_cache", str(GO_CACHE))
        if settings["go_cache"] == str(GO_CACHE):
            # Test runs share this GOCACHE: no agent of one empties it under another's build.
            settings.setdefault("pruning", {"go_cache_max_mb": 1 << 30})
        agent = AgentProcess.create(
            tmp_path, name=name, installation=installation, node_type=node_type,
            repositories=repositories, **settings,
        )
        started.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in started:
        agent.stop()


def micro_image(images: dict[str, str]) -> str:
    return images["micro"]


__all__ = ["CANARY_PASSWORD", "CANARY_USER", "GO_CACHE", "IMAGE_TAGS"]
