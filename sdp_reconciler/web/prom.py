"""``GET /metrics`` of the reconciler's listener (``watch``, ``serve``): Prometheus text format.

Read from the history at each scrape by a collector in a registry of its own, so ``watch`` and
``serve`` over the same history give the same figures (counters count what the history still
holds: its retention prunes them, which Prometheus takes as a reset). Names (documented in
docs/operations.md):

* ``sdp_passes_total{result}`` — passes by result (CONVERGED, NOT_CONVERGED, REFUSED, ERROR…);
* ``sdp_pass_duration_seconds`` — histogram of finished passes' durations;
* ``sdp_last_pass_duration_seconds``, ``sdp_last_pass_timestamp_seconds``;
* ``sdp_changes_applied_total{action}`` — changes carried out (create, update, remove…);
* ``sdp_change_failures_total{reason}`` — failed changes by the stage that failed;
* ``sdp_sandboxes{sync,health}`` — sandboxes by their last sync and health;
* ``sdp_services{sync,health}`` — services likewise;
* ``sdp_container_cpu_percent``, ``sdp_container_memory_bytes``,
  ``sdp_container_memory_limit_bytes{sandbox,service,node}`` — the latest sample of each;
* ``sdp_sse_streams`` — event streams open on this listener.

Access: a viewer's session like every page, or ``Authorization: Bearer $SDP_METRICS_TOKEN``
(the reconciler's environment) for a scraper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import anyio.to_thread
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from sdp_reconciler.history import History
from sdp_reconciler.web.hooks import HookCounters

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def _seconds(start: str, end: str) -> float:
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start))
               .total_seconds())


class HistoryCollector(Collector):
    def __init__(self, history: History, open_streams: Callable[[], int],
                 hooks: Callable[[], dict[str, int] | None] = lambda: None) -> None:
        self.history = history
        self.open_streams = open_streams
        self.hooks = hooks
        """how this listener's webhook requests ended (None: no webhook endpoint here)"""

    def collect(self) -> Iterator[Metric]:
        q = self.history.query
        passes = CounterMetricFamily("sdp_passes", "reconcile passes by result",
                                     labels=["result"])
        for row in q("SELECT status, COUNT(*) AS n FROM passes GROUP BY status ORDER BY status"):
            passes.add_metric([row["status"]], row["n"])
        yield passes

        finished = q("SELECT started_at, finished_at FROM passes WHERE finished_at IS NOT NULL "
                     "ORDER BY id")
        durations = [_seconds(r["started_at"], r["finished_at"]) for r in finished]
        histogram = HistogramMetricFamily("sdp_pass_duration_seconds",
                                          "duration of finished reconcile passes")
        buckets = [(str(b), float(sum(1 for d in durations if d <= b))) for b in BUCKETS]
        buckets.append(("+Inf", float(len(durations))))
        histogram.add_metric([], buckets, sum_value=sum(durations))
        yield histogram
        if finished:
            last = finished[-1]
            yield GaugeMetricFamily("sdp_last_pass_duration_seconds",
                                    "duration of the last finished pass", value=durations[-1])
            yield GaugeMetricFamily(
                "sdp_last_pass_timestamp_seconds", "when the last finished pass ended",
                value=datetime.fromisoformat(last["finished_at"]).timestamp())

        applied = CounterMetricFamily("sdp_changes_applied", "changes carried out, by action",
                                      labels=["action"])
        by_action: dict[str, int] = {}
        for row in q("SELECT action, COUNT(*) AS n FROM deployments WHERE completed_at IS NOT "
                     "NULL AND status != 'FAILED' GROUP BY action"):
            verb = str(row["action"]).split(" ", 1)[0]  # "create service" -> create
            by_action[verb] = by_action.get(verb, 0) + int(row["n"])
        for verb, count in sorted(by_action.items()):
            applied.add_metric([verb], count)
        yield applied
        failures = CounterMetricFamily("sdp_change_failures",
                                       "failed changes, by the stage that failed",
                                       labels=["reason"])
        for row in q("SELECT COALESCE(stage, 'error') AS reason, COUNT(*) AS n FROM deployments "
                     "WHERE status = 'FAILED' GROUP BY reason ORDER BY reason"):
            failures.add_metric([row["reason"]], row["n"])
        yield failures

        for name, where, what in (("sdp_sandboxes", "service = ''", "sandboxes"),
                                  ("sdp_services", "service != ''", "services")):
            family = GaugeMetricFamily(name, f"{what} by their last sync and health",
                                       labels=["sync", "health"])
            for row in q(f"SELECT sync, health, COUNT(*) AS n FROM status WHERE {where} "  # noqa: S608
                         "GROUP BY sync, health ORDER BY sync, health"):
                family.add_metric([row["sync"], row["health"]], row["n"])
            yield family

        latest = q("SELECT s.* FROM samples s JOIN (SELECT container, MAX(at) AS at FROM samples "
                   "GROUP BY container) l ON s.container = l.container AND s.at = l.at "
                   "ORDER BY s.sandbox, s.service")
        labels = ["sandbox", "service", "node"]
        for column, name, text in (
            ("cpu_percent", "sdp_container_cpu_percent", "CPU use (100 = one core)"),
            ("memory_bytes", "sdp_container_memory_bytes", "memory in use"),
            ("memory_limit_bytes", "sdp_container_memory_limit_bytes", "memory limit"),
        ):
            family = GaugeMetricFamily(name, f"{text}, the latest sample", labels=labels)
            for row in latest:
                if row[column] is not None:
                    family.add_metric([row["sandbox"], row["service"], row["node"]],
                                      float(row[column]))
            yield family
        yield GaugeMetricFamily("sdp_sse_streams", "event streams open on this listener",
                                value=self.open_streams())
        hooks = CounterMetricFamily("sdp_webhook_requests",
                                    "push webhook requests on this listener, by how they ended",
                                    labels=["result"])
        counts = self.hooks() or dict.fromkeys(HookCounters.OUTCOMES, 0)
        for result, count in sorted(counts.items()):
            hooks.add_metric([result], float(count))
        yield hooks


def registry_for(history: History, open_streams: Callable[[], int],
                 hooks: Callable[[], dict[str, int] | None] = lambda: None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HistoryCollector(history, open_streams, hooks))
    return registry


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.prometheus
    body = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE)


__all__ = ["CONTENT_TYPE", "HistoryCollector", "metrics", "registry_for"]
