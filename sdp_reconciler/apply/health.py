"""Health rules: a container's health from what its node reported and its recent samples.

Pure. ``judge`` reads the container's observed state and the agent's samples (``metrics``;
absent from an older agent) under the installation's ``HealthRules`` (nodes.yaml ``health``;
defaults in docs/operations.md) and gives (health, reason, message), the first rule that
applies winning, worst first:

* no container: ``Unhealthy`` ``ContainerMissing``;
* ``restarts_per_hour`` or more restarts in the last hour, or Docker says ``restarting``:
  ``Unhealthy`` ``CrashLooping``;
* not running: ``Unhealthy`` ``ContainerStopped``;
* ``failing_checks`` failed health checks in a row: ``Unhealthy`` ``HealthCheckFailing``;
* the health check failing now: ``Degraded`` ``HealthCheckFailing``;
* memory at or above ``memory_percent`` of its limit: ``Degraded`` ``MemoryHigh``;
* CPU at or above ``cpu_percent`` (when set): ``Degraded`` ``CpuHigh``;
* a restart in the last hour (or, without samples, ever): ``Degraded`` ``Restarted``;
* otherwise ``Healthy`` ``UpToDate``.
"""

from __future__ import annotations

from sdp_node.metricswire import ContainerMetrics
from sdp_node.protocol import ObservedContainer
from sdp_reconciler.state.models import HealthRules
from sdp_reconciler.statuses import Health, Reason

Judgement = tuple[Health, Reason, str]


def _size(value: int) -> str:
    for unit, size in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value >= size:
            return f"{value / size:.0f}{unit}"
    return f"{value}B"


def judge(container: ObservedContainer | None, metrics: ContainerMetrics | None,
          rules: HealthRules) -> Judgement:
    if container is None:
        return Health.UNHEALTHY, Reason.CONTAINER_MISSING, "no container"
    restarts = metrics.restarts_last_hour if metrics is not None else None
    if container.state == "restarting" or (restarts or 0) >= rules.restarts_per_hour:
        count = restarts if restarts is not None else container.restart_count
        return (Health.UNHEALTHY, Reason.CRASH_LOOPING,
                f"the container keeps restarting ({count} restart(s) in the last hour)")
    if container.state != "running":
        return Health.UNHEALTHY, Reason.CONTAINER_STOPPED, f"container {container.state}"
    failing = metrics.failing_checks if metrics is not None else 0
    if failing >= rules.failing_checks:
        check = container.health_check or (metrics.latest.health if metrics and metrics.latest
                                           else None)
        return (Health.UNHEALTHY, Reason.HEALTH_CHECK_FAILING,
                f"health check failed {failing} times in a row (last: {check})")
    if container.health_check not in (None, "ok"):
        return (Health.DEGRADED, Reason.HEALTH_CHECK_FAILING,
                f"health check: {container.health_check}")
    latest = metrics.latest if metrics is not None else None
    if latest is not None and latest.memory_percent is not None \
            and latest.memory_percent >= rules.memory_percent:
        assert latest.memory_bytes is not None and latest.memory_limit_bytes is not None
        return (Health.DEGRADED, Reason.MEMORY_HIGH,
                f"memory {_size(latest.memory_bytes)} is {latest.memory_percent:.0f}% of its "
                f"{_size(latest.memory_limit_bytes)} limit (rule: {rules.memory_percent:g}%)")
    if latest is not None and rules.cpu_percent is not None \
            and latest.cpu_percent is not None and latest.cpu_percent >= rules.cpu_percent:
        return (Health.DEGRADED, Reason.CPU_HIGH,
                f"CPU {latest.cpu_percent:.0f}% (rule: {rules.cpu_percent:g}%)")
    if restarts is not None:
        if restarts > 0:
            return (Health.DEGRADED, Reason.RESTARTED,
                    f"restarted {restarts} time(s) in the last hour")
    elif container.restart_count > 0:
        return Health.DEGRADED, Reason.RESTARTED, f"restarted {container.restart_count} time(s)"
    return Health.HEALTHY, Reason.UP_TO_DATE, ""


__all__ = ["Judgement", "judge"]
