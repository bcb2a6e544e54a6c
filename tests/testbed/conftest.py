"""Shared fixtures for tests that stand on the testbed (real engine, real git, go and php).

Written to move into tests/conftest.py unchanged. Everything a test starts is stopped by the
fixture that started it: servers by their own stop(), containers and networks by the
`sdp.testbed.test=<uuid>` label each test gets (`docker_labels`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from sdp_testbed.fixtures import OcpStandIn, build_module_cache
from sdp_testbed.gitserver import GitServer
from sdp_testbed.images import (
    DEFAULT_CACHE_DIR,
    ensure_images,
)

TEST_LABEL = "sdp.testbed.test"
GIT_USERNAME = "sdp-tester"
# Every character class a credential can trip over: '$', ':', '@', '%', '^', '/', non-ASCII
# inside latin-1 ('é') and beyond it ('€').
GIT_PASSWORD = "Pa$$:w@rd%^/é€"

RunContainer = Callable[..., Any]


@pytest.fixture
def git_root(tmp_path: Path) -> Path:
    root = tmp_path / "git"
    root.mkdir()
    return root


@pytest.fixture
def git_credentials() -> tuple[str, str]:
    return GIT_USERNAME, GIT_PASSWORD


@pytest.fixture
def git_server(git_root: Path) -> Iterator[GitServer]:
    with GitServer(git_root, username=GIT_USERNAME, password=GIT_PASSWORD) as server:
        yield server


@pytest.fixture
def ocp_stand_in() -> Iterator[OcpStandIn]:
    with OcpStandIn("ocp") as server:
        yield server


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker.from_env(timeout=120)
    try:
        client.ping()
    except docker.errors.DockerException as error:
        raise RuntimeError(
            f"the Docker engine does not answer (run .ci/start-dockerd): {error}"
        ) from error
    yield client
    client.close()


@pytest.fixture
def docker_labels(docker_client: Any) -> Iterator[dict[str, str]]:
    """Labels for what a test creates in Docker; all of it is removed at teardown."""
    labels = {TEST_LABEL: uuid.uuid4().hex}
    yield labels
    selector = {"label": [f"{TEST_LABEL}={labels[TEST_LABEL]}"]}
    for container in docker_client.containers.list(all=True, filters=selector, sparse=True):
        container.remove(force=True)
    for network in docker_client.networks.list(filters=selector):
        network.remove()
    assert docker_client.containers.list(all=True, filters=selector, sparse=True) == []


@pytest.fixture
def run_container(docker_client: Any, docker_labels: dict[str, str]) -> RunContainer:
    """docker run -d with the test's labels and host.docker.internal; never pulls."""

    def run(image: str, **kwargs: Any) -> Any:
        docker_client.images.get(image)  # ImageNotFound here, rather than a pull attempt
        kwargs.setdefault("extra_hosts", {"host.docker.internal": "host-gateway"})
        return docker_client.containers.run(
            image, detach=True, labels={**docker_labels, **kwargs.pop("labels", {})}, **kwargs
        )

    return run


@pytest.fixture(scope="session")
def image_cache_dir() -> Path:
    return Path(os.environ.get("SDP_TESTBED_IMAGE_CACHE", str(DEFAULT_CACHE_DIR)))


@pytest.fixture(scope="session")
def micro_image(docker_client: Any, image_cache_dir: Path) -> str:
    return ensure_images(["micro"], cache_dir=image_cache_dir)["micro"]


@pytest.fixture(scope="session")
def php_cli_image(docker_client: Any, image_cache_dir: Path) -> str:
    return ensure_images(["php-cli"], cache_dir=image_cache_dir)["php-cli"]


@pytest.fixture(scope="session")
def php_apache_image(docker_client: Any, image_cache_dir: Path) -> str:
    """The debootstrap image: .ci/run starts building it first, in the background; this
    waits for that build (the per-kind lock) or builds it (~45 s cold) — it never skips."""
    return ensure_images(["php-apache"], cache_dir=image_cache_dir)["php-apache"]


@pytest.fixture(scope="session")
def go_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GOCACHE for the session: the first build compiles std (~10 s), later ones not."""
    if shutil.which("go") is None:
        raise RuntimeError("the go command is not on PATH")
    return tmp_path_factory.mktemp("gocache")


@pytest.fixture(scope="session")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GOMODCACHE holding example.invalid/greet v1.0.0."""
    return build_module_cache(tmp_path_factory.mktemp("gomodcache"))


@pytest.fixture
def empty_module_cache(tmp_path: Path) -> Path:
    path = tmp_path / "empty-gomodcache"
    path.mkdir()
    return path


@pytest.fixture
def start_process() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a subprocess the test owns; it is terminated (by pid) at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(command: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        kwargs.setdefault("text", True)
        process = subprocess.Popen(command, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
