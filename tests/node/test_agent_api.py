"""The agent's HTTP surface: tokens, bounded bodies, leases, SSE replay, networks at scale."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import docker
import httpx
import pytest

from sdp_node.protocol import (
    MAX_REQUEST_BYTES,
    Credentials,
    EnsureNetwork,
    RemoveNetwork,
)
from sdp_reconciler.errors import AgentError
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import wait_for
from tests.support.agents import AgentProcess, free_port
from tests.support.names import PREFIX
from tests.support.plans import deploy, run, spec


@pytest.fixture
def agent(make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
          images: dict[str, str]) -> AgentProcess:
    path, url = make_repo("account")
    commit = commit_files(path, branch="main", message="1",
                          files=go_service_files(service="account", revision="1"))
    process = make_agent(repositories=[{"name": "account", "url": url, "kind": "go",
                                        "image": images["micro"]}])
    process.extra["commit"] = commit
    return process


def test_liveness_needs_no_token_and_everything_else_does(agent: AgentProcess) -> None:
    assert httpx.get(f"{agent.url}/healthz").json()["ok"] is True
    for method, path in [("GET", "/v1/info"), ("GET", "/v1/observe"),
                         ("POST", "/v1/apply"), ("POST", "/v1/lease"),
                         ("GET", "/v1/operations"), ("POST", "/v1/branches")]:
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                        {"Authorization": agent.token}):
            answer = httpx.request(method, f"{agent.url}{path}", headers=headers, json={})
            assert answer.status_code == 401, (method, path, headers)
            assert answer.json()["error"]["code"] == "unauthorized"


def test_a_refused_apply_has_no_side_effect(
    agent: AgentProcess, canary: Credentials, docker_client: docker.DockerClient,
    installation: str,
) -> None:
    steps = deploy(spec(sandbox="s1", service="account", repository="account", branch="main",
                        commit=agent.extra["commit"], port=free_port()))
    body = json.loads(
        json.dumps({"lease_id": "x", "requested_by": "t", "steps": [
            s.model_dump(mode="json") for s in steps]})
    )
    answer = httpx.post(f"{agent.url}/v1/apply", json=body,
                        headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert answer.status_code == 401
    client = agent.client()
    with pytest.raises(AgentError) as caught:  # right token, no lease
        client.apply(lease_id="not-a-lease", steps=steps, requested_by="t", credentials=canary)
    assert caught.value.status == 409 and "needs the node's lease" in str(caught.value)
    assert client.operations() == []
    label = f"sdp.instance={installation}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    assert docker_client.networks.list(filters={"label": label}) == []
    assert not (agent.workspace / "repos" / "account.git").exists()


def test_bodies_are_bounded_and_bad_json_is_explained(agent: AgentProcess) -> None:
    headers = {"Authorization": f"Bearer {agent.token}"}
    huge = httpx.post(f"{agent.url}/v1/lease", headers=headers,
                      content=b"x" * (MAX_REQUEST_BYTES + 1))
    assert huge.status_code == 400 and "over" in huge.json()["error"]["message"]
    bad = httpx.post(f"{agent.url}/v1/lease", headers=headers, json={"holder": "h"})
    assert bad.status_code == 400
    assert "ttl_seconds" in bad.json()["error"]["message"]


def test_leases_exclude_a_second_holder_and_expire(agent: AgentProcess) -> None:
    client = agent.client()
    first = client.acquire_lease("ci-runner", 0.5)
    with pytest.raises(AgentError) as caught:
        client.acquire_lease("watcher", 60)
    assert caught.value.status == 409 and "'ci-runner'" in str(caught.value)
    again = client.acquire_lease("ci-runner", 60)  # the holder may extend
    assert again.id == first.id
    client.release_lease(first.id)
    second = client.acquire_lease("watcher", 0.2)
    # An unrenewed lease expires: the next holder gets it once its time is up.
    third = wait_for(lambda: _try_acquire(client, "ci-runner"), what="the lease to expire",
                     timeout=10)
    assert third.id != second.id
    with pytest.raises(AgentError):
        client.renew_lease(second.id, "watcher", 10)


def _try_acquire(client, holder):  # type: ignore[no-untyped-def]
    try:
        return client.acquire_lease(holder, 60)
    except AgentError:
        return None


def test_sse_reconnect_with_last_event_id_loses_nothing(
    agent: AgentProcess, canary: Credentials
) -> None:
    client = agent.client()
    outcome = run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                      branch="main", commit=agent.extra["commit"],
                                      port=free_port())), canary)
    everything = [e.id for e in outcome.events]
    assert everything == list(range(1, len(everything) + 1))
    # Cut the stream after a few events, then resume from the last id seen, repeatedly.
    seen: list[int] = []
    headers = {"Authorization": f"Bearer {agent.token}"}
    while not seen or seen[-1] != everything[-1]:
        last = seen[-1] if seen else 0
        with httpx.stream("GET", f"{agent.url}/v1/operations/{outcome.operation_id}/events",
                          headers={**headers, "Last-Event-ID": str(last)}) as response:
            taken = 0
            for line in response.iter_lines():
                if line.startswith("id:"):
                    seen.append(int(line[3:].strip()))
                    taken += 1
                    if taken == 3:
                        break  # drop the connection mid-stream
    assert seen == everything
    # An id that is not plain digits ('²' passes str.isdigit; int() refuses it) is no id: the
    # stream starts at the beginning instead of failing.
    # Past the end event of a finished operation, the stream ends (it sent heartbeats in a
    # busy loop, as fast as it could, for as long as the client stayed).
    for bad in ("²", "9" * 5000, str(everything[-1] + 5)):
        with httpx.stream("GET", f"{agent.url}/v1/operations/{outcome.operation_id}/events",
                          headers={b"Authorization": f"Bearer {agent.token}".encode(),
                                   b"Last-Event-ID": bad.encode("latin-1")}) as response:
            assert response.status_code == 200
            ids = [int(line[3:]) for line in response.iter_lines() if line.startswith("id:")]
        assert ids == (everything if bad == "²" else [])
    # The client's own follow() resumes the same way from any point.
    assert [e.id for e in client.follow(outcome.operation_id, after=5)] == everything[5:]


def test_a_hundred_sandbox_networks_on_one_node(
    agent: AgentProcess, docker_client: docker.DockerClient, installation: str
) -> None:
    client = agent.client()
    names = [f"load-{i:03d}" for i in range(100)]
    outcome = run(client, [EnsureNetwork(step_id=n, sandbox=n, network=f"{PREFIX}-{n}")
                           for n in names], None)
    assert outcome.ok, [r.message for r in outcome.results if not r.ok][:3]
    networks = docker_client.networks.list(filters={"label": f"sdp.instance={installation}"})
    subnets = {n.attrs["IPAM"]["Config"][0]["Subnet"] for n in networks}
    assert len(networks) == 100 and len(subnets) == 100
    assert all(s.startswith("10.231.") for s in subnets)
    again = run(client, [EnsureNetwork(step_id=n, sandbox=n, network=f"{PREFIX}-{n}")
                         for n in names], None)
    assert again.ok and not any(r.changed for r in again.results)
    removed = run(client, [RemoveNetwork(step_id=n, network=f"{PREFIX}-{n}") for n in names], None)
    assert removed.ok
    assert docker_client.networks.list(filters={"label": f"sdp.instance={installation}"}) == []


def _log_lines(agent: AgentProcess, *, last_id: str | None, until: str) -> list[tuple[str, str]]:
    headers = {"Authorization": f"Bearer {agent.token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    url = f"{agent.url}/v1/containers/{PREFIX}-s1-account/logs"
    lines: list[tuple[str, str]] = []
    with httpx.stream("GET", url, headers=headers, params={"tail": "50"}) as response:
        event_id = None
        for line in response.iter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:") and event_id:
                lines.append((event_id, json.loads(line[5:])["line"]))
                if until in lines[-1][1]:
                    break
    return lines


def test_container_logs_stream_and_resume_and_stats(
    agent: AgentProcess, canary: Credentials, docker_client: docker.DockerClient
) -> None:
    client = agent.client()
    assert run(client, deploy(spec(sandbox="s1", service="account", repository="account",
                                   branch="main", commit=agent.extra["commit"],
                                   port=free_port())), canary).ok
    first = _log_lines(agent, last_id=None, until="listening")
    assert len(first) == 1 and "1 listening on :8080" in first[0][1]
    docker_client.containers.get(f"{PREFIX}-s1-account").restart(timeout=1)
    # Resuming after the last id seen gives the second start's line, not the first again.
    resumed = _log_lines(agent, last_id=first[0][0], until="listening")
    assert len(resumed) == 1 and resumed[0][0] > first[0][0]
    # A tail or a Last-Event-ID that means nothing falls back to the defaults, not to a 500.
    url = f"{agent.url}/v1/containers/{PREFIX}-s1-account/logs"
    bearer = {b"Authorization": f"Bearer {agent.token}".encode()}
    cases: list[tuple[dict[str, str], dict[bytes, bytes]]] = [
        ({"tail": "²"}, {}), ({"tail": "9" * 5000}, {}),
        ({}, {b"Last-Event-ID": "2026-01-01T00:00:00.x²Z".encode("latin-1")}),
        ({}, {b"Last-Event-ID": b"1970-01-01T00:00:00Z"}),  # not a positive since, for docker-py
    ]
    for params, extra in cases:
        with httpx.stream("GET", url, headers={**bearer, **extra},
                          params={**params, "follow": "false"}) as response:
            assert response.status_code == 200
            said = [line for line in response.iter_lines() if "listening on" in line]
        assert len(said) == 2, (params, extra)  # both starts' lines
    stats = client.stats(f"{PREFIX}-s1-account")
    assert stats.memory_bytes > 0 and stats.memory_limit_bytes > 0
    with pytest.raises(AgentError) as caught:
        client.stats(f"{PREFIX}-nope-account")
    assert caught.value.status == 404


def test_container_names_in_paths_are_checked(agent: AgentProcess) -> None:
    headers = {"Authorization": f"Bearer {agent.token}"}
    for name in ("..%2F..%2Fimages%2Fjson", "a b", "%2Fetc"):
        answer = httpx.get(f"{agent.url}/v1/containers/{name}/stats", headers=headers)
        assert answer.status_code in (400, 404), (name, answer.text)
        if answer.status_code == 400:
            assert "is not a container name" in answer.json()["error"]["message"]
    answer = httpx.get(f"{agent.url}/v1/containers/a%20b/logs", headers=headers)
    assert answer.status_code == 400


HOSTILE_LINE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\rover\x08\x1b[?1049h tail"


def test_a_hostile_log_line_comes_through_intact_as_text(
    agent: AgentProcess, docker_client: docker.DockerClient, installation: str,
    images: dict[str, str],
) -> None:
    """Terminal escapes in a container's log reach the API's reader as text, byte for byte
    (the reader, sdp-reconcile logs, strips them); nothing in the agent chokes on them."""
    name = f"{PREFIX}-esc-account"
    printf = HOSTILE_LINE.replace("\x1b", "\\033").replace("\x07", "\\007").replace(
        "\r", "\\r").replace("\x08", "\\010")
    docker_client.containers.run(
        images["micro"], ["sh", "-c", f"printf '{printf}\\nafter\\n'; exec sleep 600"],
        name=name, detach=True,
        labels={"sdp.managed": "true", "sdp.instance": installation, "sdp.node": "micro-1"})
    headers = {"Authorization": f"Bearer {agent.token}"}

    def logged() -> list[str] | None:
        lines: list[str] = []
        with httpx.stream("GET", f"{agent.url}/v1/containers/{name}/logs",
                          params={"follow": "false"}, headers=headers) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:") and '"line"' in line:
                    lines.append(json.loads(line[5:])["line"])
        return lines if "after" in lines else None

    assert wait_for(logged, what="the container's two log lines") == [HOSTILE_LINE, "after"]
