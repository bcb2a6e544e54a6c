"""Health rules as a pure decision table: observed container + samples + rules -> health."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sdp_node.metricswire import ContainerMetrics, Sample
from sdp_node.protocol import ObservedContainer
from sdp_reconciler.apply.health import judge
from sdp_reconciler.state.models import HealthRules

AT = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
MI = 1024**2


def container(state: str = "running", check: str | None = "ok",
              restarts: int = 0) -> ObservedContainer:
    return ObservedContainer(name="sandbox-qa-account", id="x", labels={}, state=state,
                             status="", restart_count=restarts, health_check=check,
                             image="alpine")


def metrics(*, memory: int = 10 * MI, limit: int = 100 * MI, cpu: float = 1.0,
            restarts: int = 0, failing: int = 0) -> ContainerMetrics:
    sample = Sample(at=AT, state="running", cpu_percent=cpu, memory_bytes=memory,
                    memory_limit_bytes=limit, health="ok" if not failing else "HTTP 500")
    return ContainerMetrics(container="sandbox-qa-account", samples=[sample],
                            restarts_last_hour=restarts, failing_checks=failing)


RULES = HealthRules()


@pytest.mark.parametrize(("observed", "sampled", "rules", "expected"), [
    (None, None, RULES, ("Unhealthy", "ContainerMissing")),
    (container(), None, RULES, ("Healthy", "UpToDate")),
    (container(), metrics(), RULES, ("Healthy", "UpToDate")),
    (container(), metrics(memory=89 * MI), RULES, ("Healthy", "UpToDate")),
    (container(), metrics(memory=90 * MI), RULES, ("Degraded", "MemoryHigh")),
    (container(), metrics(memory=60 * MI), HealthRules(memory_percent=50),
     ("Degraded", "MemoryHigh")),
    (container(), metrics(cpu=250.0), RULES, ("Healthy", "UpToDate")),   # CPU off by default
    (container(), metrics(cpu=250.0), HealthRules(cpu_percent=200), ("Degraded", "CpuHigh")),
    (container(check="HTTP 500"), metrics(failing=1), RULES,
     ("Degraded", "HealthCheckFailing")),
    (container(check="HTTP 500"), metrics(failing=3), RULES,
     ("Unhealthy", "HealthCheckFailing")),
    (container(restarts=1), metrics(restarts=1), RULES, ("Degraded", "Restarted")),
    (container(restarts=5), metrics(restarts=0), RULES, ("Healthy", "UpToDate")),  # long ago
    (container(restarts=5), None, RULES, ("Degraded", "Restarted")),    # no samples: ever
    (container(restarts=3), metrics(restarts=3), RULES, ("Unhealthy", "CrashLooping")),
    (container(state="restarting"), None, RULES, ("Unhealthy", "CrashLooping")),
    (container(state="exited", check=None), None, RULES, ("Unhealthy", "ContainerStopped")),
])
def test_health_table(observed: ObservedContainer | None, sampled: ContainerMetrics | None,
                      rules: HealthRules, expected: tuple[str, str]) -> None:
    health, reason, message = judge(observed, sampled, rules)
    assert (health, reason) == expected
    assert bool(message) == (expected[0] != "Healthy")


def test_the_memory_message_names_the_figures_and_the_rule() -> None:
    _, _, message = judge(container(), metrics(memory=120 * MI, limit=128 * MI), RULES)
    assert message == "memory 120Mi is 94% of its 128Mi limit (rule: 90%)"
