"""The wire form of the agents' container metrics (``GET /v1/metrics/containers``).

Plain data, shared by the agent's sampler (``metrics.py``) and the reconciler.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from sdp_node.protocol import Wire


class Sample(Wire):
    at: datetime
    state: str = Field(description="docker state at the sample: running, restarting, ...")
    cpu_percent: float | None = Field(default=None, description="of one CPU (100 = one core)")
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = Field(
        default=None, description="the container's limit (or the host's memory)")
    restart_count: int = 0
    health: str | None = Field(
        default=None, description="the health path's answer: 'ok', 'HTTP 503' or why not")

    @property
    def memory_percent(self) -> float | None:
        if not self.memory_bytes or not self.memory_limit_bytes:
            return None
        return round(100.0 * self.memory_bytes / self.memory_limit_bytes, 1)


class ContainerMetrics(Wire):
    container: str
    sandbox: str | None = None
    service: str | None = None
    samples: list[Sample] = Field(description="oldest first")
    restarts_last_hour: int = 0
    failing_checks: int = Field(
        default=0, description="health checks failed in a row, up to the latest sample")

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None


class MetricsResponse(Wire):
    node: str
    interval_seconds: float
    containers: list[ContainerMetrics]


__all__ = ["ContainerMetrics", "MetricsResponse", "Sample"]
