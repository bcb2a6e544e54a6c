"""Fixtures of the page's tests: one deployed installation shared by the session, apps over it.

``deployed`` builds a real installation (``stack.py``) and runs ``sdp-reconcile --once`` once:
sandbox ``ok`` converges, ``broken`` fails its go build (so the history holds a FAILED
deployment with its reason), ``sleepy`` is suspended. Page tests build a fresh app over that
history and state (``make_app``) and sign in through the real gateway agent (``client``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sdp_node.protocol import Credentials
from sdp_reconciler.web import WebSettings, create_app
from sdp_testbed.gitserver import GitServer
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.support.agents import cleanup_instance
from tests.support.statedirs import commit_state, write_sandbox
from tests.web.stack import WebStack, build_stack


@pytest.fixture(autouse=True)
def _reset_sse_app_status() -> Iterator[None]:
    # sse-starlette keeps "the server is exiting" in a process-global flag.
    AppStatus.should_exit = False
    yield
    AppStatus.should_exit = False


@dataclass
class Deployed:
    stack: WebStack
    ok: str
    broken: str
    sleepy: str
    once_output: str


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory, git_server: GitServer,
             images: dict[str, str], canary: Credentials,
             docker_client: docker.DockerClient) -> Iterator[Deployed]:
    installation = f"w{uuid.uuid4().hex[:10]}"
    root = tmp_path_factory.mktemp("web-stack")
    stack = build_stack(root, installation=installation, git_server=git_server,
                        images=images, canary=canary)
    try:
        ok, broken, sleepy = (stack.name("QA-LOGIN-ERROR"), stack.name("BROKEN"),
                              stack.name("SLEEPY"))
        write_sandbox(stack.state, ok, extends="QA-DEFAULT",
                      services={"account": {"branch": "feature/login-error"}})
        write_sandbox(stack.state, broken, extends="QA-DEFAULT",
                      services={"account": {"branch": "feature/broken"}})
        write_sandbox(stack.state, sleepy, extends="QA-DEFAULT",
                      lifecycle={"suspended": True})
        commit_state(stack.state, "three sandboxes", author="Achmad <achmad@example.invalid>")
        done = stack.reconcile("once")
        assert done.returncode == 2, done.stdout + done.stderr
        yield Deployed(stack, ok, broken, sleepy, done.stdout + done.stderr)
    finally:
        stack.stop()
        cleanup_instance(docker_client, installation)


FAST = WebSettings(poll_interval=0.05, heartbeat_seconds=1.0, node_timeout=5.0)


@pytest.fixture
def make_app(deployed: Deployed) -> Callable[..., Starlette]:
    def make(**overrides: Any) -> Starlette:
        options: dict[str, Any] = {"state_dir": deployed.stack.state,
                                   "history_path": deployed.stack.history,
                                   "env": deployed.stack.env, "settings": FAST}
        options.update(overrides)
        return create_app(**options)

    return make


def sign_in(client: TestClient, username: str = CANARY_USER,
            password: str = CANARY_PASSWORD) -> Any:
    return client.post("/login", data={"username": username, "password": password,
                                       "next": "/"}, follow_redirects=False)


@pytest.fixture
def client(make_app: Callable[..., Starlette]) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        answer = sign_in(test_client)
        assert answer.status_code == 303, answer.text
        yield test_client


@pytest.fixture
def state_copy(deployed: Deployed, tmp_path: Path) -> Path:
    """A copy of the deployed state directory a test may change."""
    import shutil

    target = tmp_path / "state"
    shutil.copytree(deployed.stack.state, target, ignore=shutil.ignore_patterns(".git"))
    return target
