"""Container metrics sampled in the background: CPU, memory (and its share of the limit),
restarts and the health path's answer, kept in a short ring buffer per container.

Docker's one-shot stats take a second or two per container, so they never run inside
``observe``: a daemon thread samples every ``metrics_interval_seconds`` (node.yaml), the
containers side by side, and keeps the last ``metrics_samples`` samples of each. The
reconciler reads them from ``GET /v1/metrics/containers``; Prometheus reads the latest from
``GET /metrics`` (``promexport.py``). A restart is noticed as a rise of Docker's restart
count between two samples, and remembered for an hour (``restarts_last_hour``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sdp_node.metricswire import ContainerMetrics, MetricsResponse, Sample
from sdp_node.protocol import (
    LABEL_PORT,
    LABEL_REPOSITORY,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    ObservedContainer,
)

log = logging.getLogger("sdp_node.metrics")
HOUR_SECONDS = 3600.0


Stats = Callable[[str], tuple[float, int, int]]
"""container name -> (cpu percent, memory bytes, memory limit bytes)"""
Lister = Callable[[], list[ObservedContainer]]
Prober = Callable[[dict[str, tuple[int, str]]], dict[str, str]]
HealthPath = Callable[[str], str | None]
"""repository -> its health path (None: unknown repository)"""


class _Track:
    def __init__(self, size: int) -> None:
        self.samples: deque[Sample] = deque(maxlen=size)
        self.restarts: deque[float] = deque()
        self.sandbox: str | None = None
        self.service: str | None = None


class Sampler:
    """Samples every container this agent owns, on a daemon thread, until ``stop``."""

    def __init__(self, *, node: str, interval: float, size: int, lister: Lister, stats: Stats,
                 prober: Prober, health_path: HealthPath,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node, self.interval, self.size = node, interval, size
        self._lister, self._stats, self._prober, self._health_path = (
            lister, stats, prober, health_path)
        self._clock = clock
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Docker's one-shot stats wait about two seconds (two reads a second apart, for the
        # CPU delta), idle: many side by side cost little.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sdp-metrics")
        self.rounds = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sdp-metrics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.sample_once()
            except Exception as e:  # the sampler must outlive a bad round (engine restart)
                log.warning("metrics round failed: %s", type(e).__name__)
            self._stop.wait(max(0.0, self.interval - (self._clock() - started)))

    def sample_once(self) -> None:
        containers = [c for c in self._lister() if not c.aside]
        running = [c for c in containers if c.state == "running"]
        targets: dict[str, tuple[int, str]] = {}
        for container in running:
            port = container.labels.get(LABEL_PORT, "")
            path = self._health_path(container.labels.get(LABEL_REPOSITORY, ""))
            if port.isdigit() and path is not None:
                targets[container.name] = (int(port), path)
        probes = self._pool.submit(self._prober, targets)
        stats = {c.name: self._pool.submit(self._safe_stats, c.name) for c in running}
        answers = probes.result()
        # Every figure is in before the lock is taken: ``snapshot`` (the agent's metrics
        # endpoint, on its event loop) must never wait for Docker's answers.
        figures = {name: future.result() for name, future in stats.items()}
        now = datetime.now(UTC)
        tick = self._clock()
        with self._lock:
            for container in containers:
                track = self._tracks.setdefault(container.name, _Track(self.size))
                track.sandbox = container.labels.get(LABEL_SANDBOX)
                track.service = container.labels.get(LABEL_SERVICE)
                cpu, memory, limit = figures.get(container.name, (None, None, None))
                previous = track.samples[-1] if track.samples else None
                if previous is not None and container.restart_count > previous.restart_count:
                    track.restarts.extend([tick] * (container.restart_count
                                                    - previous.restart_count))
                while track.restarts and tick - track.restarts[0] > HOUR_SECONDS:
                    track.restarts.popleft()
                track.samples.append(Sample(
                    at=now, state=container.state, cpu_percent=cpu, memory_bytes=memory,
                    memory_limit_bytes=limit, restart_count=container.restart_count,
                    health=answers.get(container.name)))
            for gone in set(self._tracks) - {c.name for c in containers}:
                del self._tracks[gone]
        self.rounds += 1

    def _safe_stats(self, name: str) -> tuple[float | None, int | None, int | None]:
        try:
            cpu, memory, limit = self._stats(name)
        except Exception:  # gone between the listing and the stats: no figures this round
            return None, None, None
        return cpu, memory, limit

    def snapshot(self) -> MetricsResponse:
        with self._lock:
            containers = [
                ContainerMetrics(
                    container=name, sandbox=track.sandbox, service=track.service,
                    samples=list(track.samples), restarts_last_hour=len(track.restarts),
                    failing_checks=_failing(track.samples),
                )
                for name, track in sorted(self._tracks.items())
            ]
        return MetricsResponse(node=self.node, interval_seconds=self.interval,
                               containers=containers)


def _failing(samples: deque[Sample]) -> int:
    count = 0
    for sample in reversed(samples):
        if sample.state == "running" and sample.health not in (None, "ok"):
            count += 1
        elif sample.state == "running" and sample.health == "ok":
            break
    return count


__all__ = ["ContainerMetrics", "MetricsResponse", "Sample", "Sampler"]
