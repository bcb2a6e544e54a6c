"""Issue 3: a warm redeploy of a Go service through the agent vs the same steps by hand.

Both variants deploy a new commit of the fixture Go service (``sdp_testbed.go_service``) that
was pushed to their own branch just before the clock starts, on a node that already holds the
repository and a warm GOCACHE (the same directory for both):

* **agent**: from ``POST /v1/apply`` (a ``DeployService`` step, through
  ``sdp_reconciler.observe.node_client.NodeClient``) to the step's RUNNING result on the SSE stream:
  dulwich fetch → tree per commit → ``go build`` → stop/rename aside → create/start → health
  → remove the old one. The lease is taken before and given back after the clock.
* **by hand**: ``git fetch`` → ``git worktree add --detach`` → ``go build`` with the agent's
  environment → ``docker stop`` / ``docker rm`` / ``docker run`` (same image, mount, port,
  network alias, restart policy, host-gateway) → poll ``/healthz`` every 50 ms.

Rounds alternate which variant goes first. Goal (issue 3): agent / by hand ≤ 1.2.

    .venv/bin/python bench/bench_redeploy.py [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    GO_CACHE,
    Bench,
    HandDeploy,
    bench_run,
    create_network,
    event_seconds,
    get_json,
    interleaved,
    load_average,
    ratio,
    require_free_ports,
    say,
    stats,
    table,
    write_results,
)

from sdp_node.naming import DEFAULT_NAMES
from sdp_node.protocol import Credentials, DeployService, Secret
from sdp_reconciler.observe.node_client import NodeClient
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from tests.support.plans import deploy, run, spec

AGENT_PORT, HAND_PORT = 20980, 20981
HAND_SUBNET = "10.240.48.0/27"
AGENT_SUBNETS = "10.240.0.0/20"
GOAL = 1.2


class AgentRedeploy:
    def __init__(self, client: NodeClient, credentials: Credentials, sandbox: str) -> None:
        self.client = client
        self.credentials = credentials
        self.sandbox = sandbox

    def step(self, commit: str, branch: str) -> DeployService:
        return DeployService(
            step_id=uuid.uuid4().hex[:8], network=DEFAULT_NAMES.network(self.sandbox),
            spec=spec(sandbox=self.sandbox, service="account", repository="account",
                      branch=branch, commit=commit, port=AGENT_PORT),
        )

    def deploy(self, commit: str, branch: str) -> dict[str, Any]:
        lease = self.client.acquire_lease("bench-redeploy", 300)
        try:
            step = self.step(commit, branch)
            start = time.perf_counter()
            operation = self.client.apply(lease_id=lease.id, steps=[step],
                                          requested_by="bench", credentials=self.credentials)
            events = []
            running_at = None
            for event in self.client.follow(operation):
                events.append(event)
                if event.kind == "result" and event.result is not None:
                    if not event.result.ok:
                        raise RuntimeError(f"agent deploy failed: {event.result.message}")
                    running_at = time.perf_counter()
            if running_at is None:
                raise RuntimeError("the operation ended without a result")
        finally:
            self.client.release_lease(lease.id)
        return {"total": running_at - start, "stages": event_seconds(events)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()
    require_free_ports([AGENT_PORT, HAND_PORT])
    with bench_run("redeploy", keep=args.keep) as bench:
        return measure(bench, args.rounds)


def measure(bench: Bench, rounds: int) -> int:
    images = bench.images(["micro"])
    git = bench.git_server()
    repo, url = git.make_repo("account")
    branches = {"agent": "bench/agent", "hand": "bench/hand"}
    counter = {"n": 0}

    def push(variant: str) -> tuple[str, str]:
        counter["n"] += 1
        revision = f"{variant}-{counter['n']}"
        sha = commit_files(repo, branch=branches[variant], base="main", message=revision,
                           files=go_service_files(service="account", revision=revision))
        return sha, revision

    commit_files(repo, branch="main", message="main",
                 files=go_service_files(service="account", revision="main"))
    agent = bench.agent(name="micro-1", repositories=[{
        "name": "account", "url": url, "kind": "go", "image": images["micro"],
        "health_timeout_seconds": 30}], subnet_range=AGENT_SUBNETS)
    client = agent.client()
    bench.defer("node client", client.close)
    credentials = Credentials(username=Secret(git.username), password=Secret(git.password))
    sandbox = f"rd{bench.id}-agent"
    redeploy = AgentRedeploy(client, credentials, sandbox)

    # Warm-up (not timed): first deploy (network, store, cold build), then one redeploy each.
    sha, _ = push("agent")
    first = run(client, deploy(spec(sandbox=sandbox, service="account", repository="account",
                                    branch=branches["agent"], commit=sha, port=AGENT_PORT)),
                credentials, holder="bench-redeploy")
    if not first.ok:
        raise RuntimeError(f"first deploy failed: {first.results}")
    network = f"rd{bench.id}-hand"
    create_network(bench, network, HAND_SUBNET)
    hand = HandDeploy(bench=bench, repository="account", url=url, username=git.username,
                      password=git.password, image=images["micro"], port=HAND_PORT,
                      network=network, container=f"rd{bench.id}-hand-account",
                      sandbox=f"rd{bench.id}-hand", go_cache=GO_CACHE)
    for variant in ("agent", "hand"):
        sha, revision = push(variant)
        deploy_variant(variant, redeploy, hand, sha, branches[variant], revision)
    say("warm-up done; measuring")

    samples: dict[str, list[float]] = {"agent": [], "hand": []}
    steps: dict[str, list[dict[str, float]]] = {"agent": [], "hand": []}
    loads = [load_average()]
    for index in range(rounds):
        for variant in interleaved(index, ["agent", "hand"]):
            sha, revision = push(variant)
            total, detail = deploy_variant(variant, redeploy, hand, sha, branches[variant],
                                           revision)
            samples[variant].append(total)
            steps[variant].append(detail)
            say(f"round {index + 1}/{rounds} {variant:<5} {total:.3f} s {fmt(detail)}")
        loads.append(load_average())

    agent_median = stats(samples["agent"])["median"]
    hand_median = stats(samples["hand"])["median"]
    result: dict[str, Any] = {
        "goal": f"agent / by hand <= {GOAL}",
        "rounds": rounds,
        "load_average": loads,
        "agent": {**stats(samples["agent"]), "stages_median": stage_medians(steps["agent"])},
        "by_hand": {**stats(samples["hand"]), "steps_median": stage_medians(steps["hand"])},
        "ratio_agent_over_hand": ratio(agent_median, hand_median),
    }
    path = write_results("redeploy", result)
    print(table(["variant", "median s", "min s", "max s", "breakdown (medians)"], [
        ["agent (apply → RUNNING)", agent_median, stats(samples["agent"])["min"],
         stats(samples["agent"])["max"], fmt(result["agent"]["stages_median"])],
        ["by hand (git/go/docker CLI)", hand_median, stats(samples["hand"])["min"],
         stats(samples["hand"])["max"], fmt(result["by_hand"]["steps_median"])],
    ]))
    verdict = "meets" if result["ratio_agent_over_hand"] <= GOAL else "MISSES"
    print(f"ratio agent / by hand = {result['ratio_agent_over_hand']:.2f} ({verdict} the goal "
          f"<= {GOAL}); load average {loads[0]} -> {loads[-1]}; results: {path}")
    return 0


def deploy_variant(variant: str, redeploy: AgentRedeploy, hand: HandDeploy, sha: str,
                   branch: str, revision: str) -> tuple[float, dict[str, float]]:
    if variant == "agent":
        outcome = redeploy.deploy(sha, branch)
        total, detail = outcome["total"], outcome["stages"]
        port = AGENT_PORT
    else:
        start = time.perf_counter()
        detail = hand.deploy(sha)
        total = time.perf_counter() - start
        port = HAND_PORT
    served = get_json(f"http://127.0.0.1:{port}/")["revision"]
    if served != revision:
        raise RuntimeError(f"{variant}: port {port} serves {served!r}, expected {revision!r}")
    return total, detail


def stage_medians(runs: list[dict[str, float]]) -> dict[str, float]:
    import statistics

    keys = sorted({k for r in runs for k in r}, key=lambda k: list(runs[0]).index(k)
                  if k in runs[0] else 99)
    return {k: round(statistics.median(r[k] for r in runs if k in r), 4) for k in keys}


def fmt(detail: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in detail.items())


if __name__ == "__main__":
    sys.exit(main())
