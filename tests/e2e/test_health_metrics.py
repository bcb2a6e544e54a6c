"""Container metrics and health rules on a real engine.

The MICRO agent samples every 0.5 s (node.yaml ``metrics_interval_seconds``). ``account`` is
built with the fixture's ``/alloc`` and ``/crash`` handlers, limited to 128Mi, and nodes.yaml
says memory above 50% of the limit is Degraded: allocating 80 MiB shows in the agent's samples
and turns the service Degraded (MemoryHigh); crashing it three times is a crash loop:
Unhealthy (CrashLooping).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML
from starlette.testclient import TestClient

from sdp_node.metricswire import ContainerMetrics, MetricsResponse
from sdp_node.protocol import Credentials
from sdp_reconciler.history import History
from sdp_reconciler.web import create_app
from sdp_testbed.waiting import http_get, wait_for
from tests.e2e.stack import Stack, build_stack, stop_stack
from tests.support.agents import AgentProcess

SANDBOX = """\
sandbox: QA-HEALTH
extends: QA-DEFAULT
services:
  account:
    branch: feature/hungry
    resources: {memory: 128Mi}
"""


@pytest.fixture
def stack(
    tmp_path: Path, installation: str, make_agent: Callable[..., AgentProcess],
    make_repo: Callable[[str], tuple[Path, str]], images: dict[str, str], canary: Credentials,
) -> Iterator[Stack]:
    built = build_stack(tmp_path, installation, make_agent, make_repo, images, canary,
                        micro_settings={"metrics_interval_seconds": 0.5})
    try:
        yield built
    finally:
        stop_stack(built)


def metrics(stack: Stack, container: str) -> ContainerMetrics | None:
    answer = httpx.get(f"{stack.micro.url}/v1/metrics/containers",
                       headers={"Authorization": f"Bearer {stack.micro.token}"}, timeout=10)
    answer.raise_for_status()
    found = MetricsResponse.model_validate_json(answer.content)
    return next((m for m in found.containers if m.container == container), None)


def status(stack: Stack, service: str) -> dict[str, Any]:
    history = History(stack.history)
    try:
        return next(r for r in history.status()
                    if r["sandbox"] == "QA-HEALTH" and r["service"] == service)
    finally:
        history.close()


def test_memory_past_the_rule_is_degraded_and_a_crash_loop_unhealthy(stack: Stack) -> None:
    stack.push_service("account", "feature/hungry", "account hungry 1", hungry=True)
    nodes = stack.state / "nodes.yaml"
    document = YAML().load(nodes.read_text())
    document["health"] = {"memory_percent": 50}
    with nodes.open("w") as out:
        YAML().dump(document, out)
    stack.write("sandboxes/QA-HEALTH.yaml", SANDBOX)
    stack.commit_state("a sandbox with a memory-hungry account")
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    container = next(c for c in _names(stack) if c.endswith("-qa-health-account"))
    port = status(stack, "account")["port"]
    assert status(stack, "account")["health"] == "Healthy"

    # Samples come from the background sampler, with the limit the state set.
    # (wait_for waits while the probe returns None: each probe gives the value or None)
    sampled = wait_for(lambda: ((m := metrics(stack, container)) and m.latest
                       and m.latest.memory_bytes and m) or None,
                       what="a sample with memory figures")
    assert sampled.latest is not None
    assert sampled.latest.memory_limit_bytes == 128 * 1024**2
    assert sampled.latest.health == "ok" and sampled.sandbox == "QA-HEALTH"
    before = sampled.latest.memory_bytes or 0

    assert http_get(f"http://127.0.0.1:{port}/alloc?mb=80").status == 200
    grown = wait_for(lambda: ((m := metrics(stack, container)) and m.latest
                     and (m.latest.memory_percent or 0) >= 50 and m) or None,
                     what="memory above 50%",
                     timeout=30)
    assert grown.latest is not None and (grown.latest.memory_bytes or 0) > before + 60 * 1024**2
    memory = agent_prometheus(stack)["sdp_agent_container_memory_bytes"]
    assert memory[(("container", container), ("sandbox", "QA-HEALTH"),
                   ("service", "account"))] > 60 * 1024**2
    second = stack.reconcile("once")
    assert second.code == 0, second.output
    row = status(stack, "account")
    assert (row["health"], row["reason"]) == ("Degraded", "MemoryHigh"), row
    assert "of its 128Mi limit (rule: 50%)" in row["message"]
    assert status(stack, "")["health"] == "Degraded"

    # Three crashes within the hour: a crash loop.
    for crash in range(1, 4):
        wait_for(lambda: _answers(port) or None, what=f"account up before crash {crash}",
                 timeout=30)
        assert http_get(f"http://127.0.0.1:{port}/crash").status == 200
        wait_for(lambda c=crash: ((m := metrics(stack, container))
                 and m.restarts_last_hour >= c) or None,
                 what=f"restart {crash} sampled", timeout=60)
    third = stack.reconcile("once")
    row = status(stack, "account")
    assert (row["health"], row["reason"]) == ("Unhealthy", "CrashLooping"), (row, third.output)
    assert "3 restart(s) in the last hour" in row["message"]
    restarts = agent_prometheus(stack)["sdp_agent_container_restarts_last_hour"]
    assert restarts[(("container", container), ("sandbox", "QA-HEALTH"),
                     ("service", "account"))] >= 3

    # The reconciler's listener over the same history: the sandbox's health, its samples.
    app = create_app(state_dir=stack.state, history_path=stack.history,
                     env={**stack.env, "SDP_METRICS_TOKEN": "scraper-token"})
    with TestClient(app) as client:
        answer = client.get("/metrics", headers={"Authorization": "Bearer scraper-token"})
    assert answer.status_code == 200, answer.text
    found = parse(answer.text)
    assert found["sdp_sandboxes"][(("health", "Unhealthy"), ("sync", "InSync"))] == 1.0
    assert found["sdp_container_memory_limit_bytes"][
        (("node", "micro-1"), ("sandbox", "QA-HEALTH"), ("service", "account"))] == 128 * 1024**2


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return found


def agent_prometheus(stack: Stack) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    answer = httpx.get(f"{stack.micro.url}/metrics",
                       headers={"Authorization": f"Bearer {stack.micro.token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{stack.micro.url}/metrics", timeout=10).status_code == 401
    return parse(answer.text)


def _answers(port: int) -> bool:
    try:
        return http_get(f"http://127.0.0.1:{port}/healthz").status == 200
    except OSError:
        return False


def _names(stack: Stack) -> list[str]:
    answer = httpx.get(f"{stack.micro.url}/v1/observe",
                       headers={"Authorization": f"Bearer {stack.micro.token}"}, timeout=30)
    return [c["name"] for c in answer.json()["containers"]]
