"""Credentials are sacred: a canary username and password are looked for everywhere.

The canary password holds ``$ : @ % ^ / é €``. It, the username, their percent-encoded forms and
the base64 of ``user:password`` must appear in no agent log, no event, no raw SSE byte, no file
under the workspace, no ``docker inspect`` and no process's argv (sampled continuously while
the agent works).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import docker
import httpx
import pytest

from sdp_node.protocol import Credentials, Secret
from sdp_node.redact import Redactor
from sdp_reconciler.errors import AgentError
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.support.agents import AgentProcess, free_port
from tests.support.plans import deploy, spec


def canary_forms() -> list[bytes]:
    forms = set()
    for value in (CANARY_USER, CANARY_PASSWORD):
        for text in (value, quote(value, safe=""), quote_plus(value), quote(value)):
            forms.add(text.encode())
        forms.add(base64.b64encode(value.encode()))
    forms.add(base64.b64encode(f"{CANARY_USER}:{CANARY_PASSWORD}".encode()))
    forms.add(CANARY_PASSWORD.encode("latin-1", "replace"))
    # The spelling handed to dulwich (UTF-8 bytes as latin-1 characters), as UTF-8 text.
    forms.add(CANARY_PASSWORD.encode().decode("latin-1").encode())
    return sorted(forms)


def find_canary(blob: bytes) -> list[bytes]:
    return [form for form in canary_forms() if form in blob]


class ArgvSampler:
    """Reads every process's /proc/<pid>/cmdline in a loop until stopped."""

    def __init__(self) -> None:
        self.samples = 0
        self.hits: list[tuple[int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if find_canary(cmdline):
                    self.hits.append((int(entry.name), cmdline))
            self.samples += 1

    def __enter__(self) -> ArgvSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def sampler() -> Iterator[ArgvSampler]:
    with ArgvSampler() as running:
        yield running


def test_wrong_credentials_are_a_clear_authentication_failure(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str],
) -> None:
    path, url = make_repo("account")
    commit_files(path, branch="main", files=go_service_files(service="account", revision="1"),
                 message="1")
    client = make_agent(repositories=[{"name": "account", "url": url, "kind": "go"}]).client()
    wrong = Credentials(username=Secret(CANARY_USER), password=Secret("not-the-password"))
    with pytest.raises(AgentError) as caught:
        client.branches("account", wrong)
    assert caught.value.status == 403
    assert "authentication failed for repository account" in str(caught.value)
    assert "LOGIN FAILED" in str(caught.value)
    assert "not-the-password" not in str(caught.value)


def test_the_canary_appears_nowhere(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, docker_client: docker.DockerClient,
    installation: str, sampler: ArgvSampler,
) -> None:
    path, url = make_repo("account")
    commit = commit_files(path, branch="main", message="1",
                          files=go_service_files(service="account", revision="1"))
    agent = make_agent(repositories=[{"name": "account", "url": url, "kind": "go",
                                      "image": images["micro"]}])
    client = agent.client()
    assert client.branches("account", canary)["main"] == commit

    # A deploy that fetches with the canary, and one that fails with wrong credentials.
    raw_sse = bytearray()
    wrong = Credentials(username=Secret(CANARY_USER), password=Secret(CANARY_PASSWORD + "x"))
    port = free_port()
    lease = client.acquire_lease("canary-test", 300)
    for credentials, sandbox in ((canary, "s1"), (wrong, "s2")):
        steps = deploy(spec(sandbox=sandbox, service="account", repository="account",
                            branch="main", commit=commit if sandbox == "s1" else "f" * 40,
                            port=port if sandbox == "s1" else free_port()))
        operation = client.apply(lease_id=lease.id, steps=steps, requested_by="canary-test",
                                 credentials=credentials)
        with httpx.stream(
            "GET", f"{agent.url}/v1/operations/{operation}/events",
            headers={"Authorization": f"Bearer {agent.token}"}, timeout=120,
        ) as response:
            for line in response.iter_lines():
                raw_sse.extend(line.encode() + b"\n")
                if line == "event: end":
                    break
    client.release_lease(lease.id)
    summaries = b"".join(o.model_dump_json().encode() for o in client.operations())
    assert b'"ok":true' in raw_sse.replace(b" ", b"")  # the good deploy succeeded
    assert b"authentication failed" in raw_sse  # the bad one failed, and said why

    agent.stop()  # flush and close the agent's log
    assert find_canary(bytes(raw_sse)) == []
    assert find_canary(summaries) == []
    assert find_canary(agent.log_path.read_bytes()) == []
    for file in agent.workspace.rglob("*"):
        if file.is_file() and not file.is_symlink():
            assert find_canary(file.read_bytes()) == [], file
    inspected = [
        json.dumps(c.attrs).encode()
        for c in docker_client.containers.list(all=True,
                                               filters={"label": f"sdp.instance={installation}"})
    ]
    assert inspected, "the deploy should have left a container to inspect"
    for blob in inspected:
        assert find_canary(blob) == []
    sampler.__exit__()
    assert sampler.samples > 10, "the argv sampler must have run during the deploy"
    assert sampler.hits == []


def test_redaction_covers_encoded_forms() -> None:
    redact = Redactor([CANARY_USER, CANARY_PASSWORD], pairs=[(CANARY_USER, CANARY_PASSWORD)])
    texts = [
        f"https://{quote(CANARY_USER)}:{quote(CANARY_PASSWORD, safe='')}@host/x",
        "Authorization: Basic "
        + base64.b64encode(f"{CANARY_USER}:{CANARY_PASSWORD}".encode()).decode(),
        f"password={quote_plus(CANARY_PASSWORD)}",
        f"raw {CANARY_PASSWORD} and {CANARY_USER}",
    ]
    for text in texts:
        assert find_canary(redact(text).encode()) == [], text
