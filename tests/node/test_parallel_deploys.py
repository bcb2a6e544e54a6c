"""Several sandboxes in one plan, through a real agent with a pool of 3 workers: real git
server, real go, real Docker engine. Overlap and the bound are read from the agent's own
event times (each step's "started" line and its result), never from durations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import docker

from sdp_node.protocol import (
    Credentials,
    DeployService,
    EnsureNetwork,
    FailureReason,
    RemoveContainer,
    RemoveNetwork,
    Step,
)
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.node.test_go_deploy import answer, go_repo
from tests.support.agents import AgentProcess, free_port
from tests.support.names import NAMES, PREFIX
from tests.support.plans import Outcome, deploy, run, spec

WORKERS = 3
GOOD = ["p-one", "p-two", "p-three", "p-four", "p-five"]


def intervals(outcome: Outcome) -> dict[str, tuple[datetime, datetime]]:
    """step id -> (its "started" line, its result), on the agent's clock."""
    started = {e.step_id: e.at for e in outcome.events
               if e.kind == "log" and e.message.startswith("started (")}
    ended = {e.step_id: e.at for e in outcome.events if e.kind == "result"}
    assert started.keys() == ended.keys()
    return {k: (started[k], ended[k]) for k in started if k is not None}


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans],
                   key=lambda edge: (edge[0], edge[1]))
    running = most = 0
    for _, delta in edges:
        running += delta
        most = max(most, running)
    return most


def overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_sandboxes_of_one_plan_deploy_side_by_side_build_once_and_fail_alone(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    make_repo: Callable[[str], tuple[Path, str]], docker_client: docker.DockerClient,
) -> None:
    path, url = make_repo("account")
    good = commit_files(path, branch="main", message="main",
                        files=go_service_files(service="account", revision="main-1"))
    broken = commit_files(path, branch="broken", base="main", message="broken",
                          files=go_service_files(service="account", revision="broken",
                                                 compile_error=True))
    agent = make_agent(repositories=[go_repo(url, images)], apply_workers=WORKERS)
    client = agent.client()
    ports = {sandbox: free_port() for sandbox in [*GOOD, "p-broken"]}
    steps: list[Step] = []
    for sandbox in GOOD:
        steps += deploy(spec(sandbox=sandbox, service="account", repository="account",
                             branch="main", commit=good, port=ports[sandbox]))
    steps += deploy(spec(sandbox="p-broken", service="account", repository="account",
                         branch="broken", commit=broken, port=ports["p-broken"]))
    outcome = run(client, steps, canary)

    results = {r.step_id: r for r in outcome.results}
    deploys = {s.spec.sandbox: s.step_id for s in steps if isinstance(s, DeployService)}
    networks = {s.sandbox: s.step_id for s in steps if isinstance(s, EnsureNetwork)}
    # A failure in one sandbox leaves the others deployed.
    failed = results[deploys["p-broken"]]
    assert not failed.ok and failed.reason is FailureReason.BUILD_FAILED, failed
    assert any("main.go" in line for line in failed.output_tail)
    for sandbox in GOOD:
        assert results[deploys[sandbox]].ok, results[deploys[sandbox]]
        assert answer(ports[sandbox])["revision"] == "main-1"
        assert answer(ports[sandbox])["env"]["SDP_SANDBOX"] == sandbox
    assert results[networks["p-broken"]].ok

    # The same commit is built once: one `go build` for main, one for the broken commit; the
    # deploys that needed main meanwhile waited for that build or found its record.
    builds = [e.step_id for e in outcome.events
              if e.kind == "log" and e.message.startswith("$ go build")]
    assert len(builds) == 2 and deploys["p-broken"] in builds, builds
    builder = next(b for b in builds if b != deploys["p-broken"])
    for sandbox in GOOD:
        if deploys[sandbox] != builder:
            assert any(e.step_id == deploys[sandbox] and (
                "built by the other deploy" in e.message or "already built" in e.message)
                for e in outcome.events if e.kind == "log"), sandbox

    spans = intervals(outcome)
    assert len(spans) == len(steps)
    # Deploys of different sandboxes ran at the same time, never more than the pool's size.
    deploy_spans = [spans[deploys[s]] for s in GOOD]
    assert any(overlap(a, b) for i, a in enumerate(deploy_spans) for b in deploy_spans[i + 1:])
    assert most_at_once(list(spans.values())) <= WORKERS
    # A sandbox's network came before its container.
    for sandbox, step_id in deploys.items():
        assert spans[networks[sandbox]][1] <= spans[step_id][0]
    # Each deployment's own events are in order, whatever ran beside it.
    for sandbox in GOOD:
        own = [e.event.value for e in outcome.events
               if e.step_id == deploys[sandbox] and e.kind == "event" and e.event]
        assert own == ["FETCH_STARTED", "FETCH_COMPLETED", "CHECKOUT_STARTED",
                       "CHECKOUT_COMPLETED", "BUILD_STARTED", "BUILD_COMPLETED",
                       "DEPLOY_STARTED", "DEPLOY_COMPLETED"], (sandbox, own)
    # Credentials reach no event, however the steps interleaved.
    text = "".join(e.model_dump_json() for e in outcome.events)
    assert CANARY_PASSWORD not in text and CANARY_USER not in text

    # Removing three sandboxes: each one's network after its container, sandboxes overlap.
    removed = GOOD[:3]
    removal: list[Step] = []
    for sandbox in removed:
        removal += [RemoveContainer(step_id=f"rm-{sandbox}",
                                    container=NAMES.container(sandbox, "account")),
                    RemoveNetwork(step_id=f"rmnet-{sandbox}", network=NAMES.network(sandbox))]
    gone = run(client, removal, canary)
    assert gone.ok, gone.results
    spans = intervals(gone)
    for sandbox in removed:
        assert spans[f"rm-{sandbox}"][1] <= spans[f"rmnet-{sandbox}"][0]
    assert any(overlap(spans[f"rm-{a}"], spans[f"rm-{b}"]) or
               overlap(spans[f"rmnet-{a}"], spans[f"rm-{b}"])
               for a in removed for b in removed if a != b)
    names = {c.name for c in docker_client.containers.list(
        all=True, filters={"label": f"sdp.instance={agent.installation}"})}
    assert names == {NAMES.container(s, "account") for s in GOOD[3:]}
    left = {n.name for n in docker_client.networks.list(
        filters={"label": f"sdp.instance={agent.installation}"})}
    assert left == {NAMES.network(s) for s in [*GOOD[3:], "p-broken"]}

def test_two_switches_given_one_port_run_one_after_the_other_and_the_second_is_refused(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    make_repo: Callable[[str], tuple[Path, str]],
) -> None:
    """The planner gives every switch its own spare port; a plan that gave two the same one
    must not race them onto it: the first switches, the second finds the port taken and its
    running container keeps serving."""
    path, url = make_repo("account")
    first = commit_files(path, branch="main", message="1",
                         files=go_service_files(service="account", revision="main-1"))
    client = make_agent(repositories=[go_repo(url, images)], apply_workers=WORKERS).client()
    old = {"q-a": free_port(), "q-b": free_port()}
    steps: list[Step] = []
    for sandbox, port in old.items():
        steps += deploy(spec(sandbox=sandbox, service="account", repository="account",
                             branch="main", commit=first, port=port))
    assert run(client, steps, canary).ok
    second = commit_files(path, branch="main", message="2",
                          files=go_service_files(service="account", revision="main-2"))
    spare = free_port()
    switch = [DeployService(step_id=f"switch-{sandbox}", network=NAMES.network(sandbox),
                            spec=spec(sandbox=sandbox, service="account", repository="account",
                                      branch="main", commit=second, port=spare))
              for sandbox in old]
    outcome = run(client, switch, canary)
    results = {r.step_id: r for r in outcome.results}
    assert results["switch-q-a"].ok, results["switch-q-a"]
    refused = results["switch-q-b"]
    assert not refused.ok and f"port {spare}" in refused.message, refused
    assert f"{PREFIX}-q-a-account" in refused.message
    spans = intervals(outcome)
    assert spans["switch-q-a"][1] <= spans["switch-q-b"][0]
    assert answer(spare)["revision"] == "main-2"
    assert answer(old["q-b"])["revision"] == "main-1"
    assert answer(old["q-a"])["revision"] == "main-1"  # the previous one, until retired


def test_a_switch_killed_between_its_renames_gives_the_old_container_its_name_back(
    make_agent: Callable[..., AgentProcess], images: dict[str, str], canary: Credentials,
    make_repo: Callable[[str], tuple[Path, str]], docker_client: docker.DockerClient,
) -> None:
    """What an agent killed between a switch's two renames leaves: the old container already
    ``--previous`` (and the new one still ``--next``, removed at start as unconfirmed); at
    start the old one, which never stopped, is ``<name>`` again."""
    path, url = make_repo("account")
    commit = commit_files(path, branch="main", message="1",
                          files=go_service_files(service="account", revision="main-1"))
    agent = make_agent(repositories=[go_repo(url, images)])
    port = free_port()
    assert run(agent.client(), deploy(spec(sandbox="k-a", service="account",
                                           repository="account", branch="main", commit=commit,
                                           port=port)), canary).ok
    name = NAMES.container("k-a", "account")
    agent.kill()
    docker_client.containers.get(name).rename(f"{name}--previous")
    agent.start()
    names = {c.name for c in docker_client.containers.list(
        all=True, filters={"label": f"sdp.instance={agent.installation}"})}
    assert names == {name}
    assert docker_client.containers.get(name).status == "running"
    assert answer(port)["revision"] == "main-1"
