"""``GET /metrics`` of an agent: the sampler's latest figures in Prometheus' text format.

Built per scrape from the sampler's snapshot (``metrics.py``) by a collector in a registry of
its own (never prometheus_client's process-global one), so two agents in one process (tests)
never mix. Names (documented in docs/operations.md):

* ``sdp_agent_container_cpu_percent``, ``sdp_agent_container_memory_bytes``,
  ``sdp_agent_container_memory_limit_bytes``, ``sdp_agent_container_restarts``,
  ``sdp_agent_container_restarts_last_hour``, ``sdp_agent_container_health_ok`` — gauges
  labelled ``sandbox``, ``service``, ``container``;
* ``sdp_agent_sample_rounds_total`` — counter of sampling rounds.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sdp_node.metrics import Sampler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ["sandbox", "service", "container"]


class _SamplerCollector(Collector):
    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        snapshot = self.sampler.snapshot()
        families = {
            "cpu": GaugeMetricFamily("sdp_agent_container_cpu_percent",
                                     "CPU use of the container (100 = one core)", labels=LABELS),
            "memory": GaugeMetricFamily("sdp_agent_container_memory_bytes",
                                        "memory the container uses", labels=LABELS),
            "limit": GaugeMetricFamily("sdp_agent_container_memory_limit_bytes",
                                       "the container's memory limit", labels=LABELS),
            "restarts": GaugeMetricFamily("sdp_agent_container_restarts",
                                          "Docker's restart count of the container",
                                          labels=LABELS),
            "hour": GaugeMetricFamily("sdp_agent_container_restarts_last_hour",
                                      "restarts seen in the last hour", labels=LABELS),
            "health": GaugeMetricFamily("sdp_agent_container_health_ok",
                                        "1 when the health path answered below 400",
                                        labels=LABELS),
        }
        for container in snapshot.containers:
            latest = container.latest
            if latest is None:
                continue
            labels = [container.sandbox or "", container.service or "", container.container]
            if latest.cpu_percent is not None:
                families["cpu"].add_metric(labels, latest.cpu_percent)
            if latest.memory_bytes is not None:
                families["memory"].add_metric(labels, latest.memory_bytes)
            if latest.memory_limit_bytes is not None:
                families["limit"].add_metric(labels, latest.memory_limit_bytes)
            families["restarts"].add_metric(labels, latest.restart_count)
            families["hour"].add_metric(labels, container.restarts_last_hour)
            if latest.health is not None:
                families["health"].add_metric(labels, 1.0 if latest.health == "ok" else 0.0)
        yield from families.values()
        rounds = CounterMetricFamily("sdp_agent_sample_rounds", "sampling rounds done")
        rounds.add_metric([], self.sampler.rounds)
        yield rounds


def registry_for(sampler: Sampler) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SamplerCollector(sampler))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "exposition", "registry_for"]
