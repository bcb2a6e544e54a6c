"""The agent's background sampler: ring buffer, restarts in the last hour, failed checks in a
row, and its daemon thread. The engine is replaced by plain functions returning what Docker
would (the real engine's path is tests/e2e/test_health_metrics.py)."""

from __future__ import annotations

import threading

from sdp_node.metrics import Sampler
from sdp_node.protocol import (
    LABEL_PORT,
    LABEL_REPOSITORY,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    ObservedContainer,
)
from sdp_testbed.waiting import wait_for


class World:
    def __init__(self) -> None:
        self.state, self.restarts, self.health, self.now = "running", 0, "ok", 1000.0
        self.listed = True

    def containers(self) -> list[ObservedContainer]:
        if not self.listed:
            return []
        return [ObservedContainer(
            name="sandbox-qa-account", id="1", state=self.state, status="",
            restart_count=self.restarts, image="alpine",
            labels={LABEL_SANDBOX: "QA", LABEL_SERVICE: "account", LABEL_PORT: "9001",
                    LABEL_REPOSITORY: "account"})]

    def sampler(self, size: int = 5, interval: float = 60.0) -> Sampler:
        return Sampler(
            node="micro-1", interval=interval, size=size, lister=self.containers,
            stats=lambda name: (12.5, 40 * 1024**2, 128 * 1024**2),
            prober=lambda targets: {n: self.health for n in targets},
            health_path=lambda repository: "/healthz" if repository == "account" else None,
            clock=lambda: self.now)


def test_samples_are_a_ring_buffer_with_the_figures_docker_gives() -> None:
    world = World()
    sampler = world.sampler(size=3)
    for _ in range(5):
        sampler.sample_once()
    (metrics,) = sampler.snapshot().containers
    assert len(metrics.samples) == 3
    latest = metrics.latest
    assert latest is not None
    assert (latest.cpu_percent, latest.memory_bytes, latest.memory_limit_bytes) == (
        12.5, 40 * 1024**2, 128 * 1024**2)
    assert latest.memory_percent == 31.2 and latest.health == "ok"
    assert (metrics.sandbox, metrics.service) == ("QA", "account")


def test_restarts_count_for_an_hour_and_failed_checks_in_a_row() -> None:
    world = World()
    sampler = world.sampler()
    sampler.sample_once()
    world.restarts, world.now = 2, world.now + 10
    sampler.sample_once()
    world.health = "HTTP 500"
    sampler.sample_once()
    sampler.sample_once()
    (metrics,) = sampler.snapshot().containers
    assert (metrics.restarts_last_hour, metrics.failing_checks) == (2, 2)
    world.now += 3601  # an hour later: the restarts are old news
    world.health = "ok"
    sampler.sample_once()
    (metrics,) = sampler.snapshot().containers
    assert (metrics.restarts_last_hour, metrics.failing_checks) == (0, 0)


def test_a_stopped_container_has_no_figures_and_a_removed_one_goes() -> None:
    world = World()
    sampler = world.sampler()
    world.state = "exited"
    sampler.sample_once()
    (metrics,) = sampler.snapshot().containers
    assert metrics.latest is not None and metrics.latest.cpu_percent is None
    assert metrics.latest.health is None
    world.listed = False
    sampler.sample_once()
    assert sampler.snapshot().containers == []


def test_the_thread_samples_on_its_own_and_stops() -> None:
    world = World()
    sampler = world.sampler(interval=0.2)
    sampler.start()
    try:
        wait_for(lambda: sampler.rounds >= 2, what="two rounds on the sampler's thread")
    finally:
        sampler.stop()


def test_a_snapshot_never_waits_for_a_round_that_waits_for_docker() -> None:
    """The agent's metrics endpoint runs on its event loop: a round stuck on Docker's stats
    once held the sampler's lock, so observe and every other request of the agent waited
    (a no-op pass over 50 sandboxes took 39 s instead of 2)."""
    world = World()
    entered, release = threading.Event(), threading.Event()

    def slow_stats(name: str) -> tuple[float, int, int]:
        entered.set()
        release.wait(timeout=30)
        return 1.0, 1, 2

    sampler = Sampler(
        node="micro-1", interval=60.0, size=5, lister=world.containers, stats=slow_stats,
        prober=lambda targets: {n: "ok" for n in targets},
        health_path=lambda repository: "/healthz", clock=lambda: world.now)
    round_ = threading.Thread(target=sampler.sample_once)
    round_.start()
    try:
        assert entered.wait(timeout=30), "the round never asked for stats"
        answered: list[object] = []
        snapshot = threading.Thread(target=lambda: answered.append(sampler.snapshot()))
        snapshot.start()
        snapshot.join(timeout=10)
        assert answered, "snapshot waited for the round's Docker answers"
    finally:
        release.set()
        round_.join(timeout=30)
    (metrics,) = sampler.snapshot().containers
    assert metrics.latest is not None and metrics.latest.cpu_percent == 1.0
