"""Which steps of a plan wait for which (``sdp_node.schedule``), and the pool that runs them
(``sdp_node.pool``): pure tables, and real threads that meet at barriers (no sleeps)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from sdp_node.errors import Conflict
from sdp_node.naming import ResourceNames
from sdp_node.pool import KeyedLocks, PortClaims, SingleFlight, StepPool
from sdp_node.protocol import (
    ContainerSpec,
    DeployGateway,
    DeployService,
    DrainContainer,
    EnsureDatabase,
    EnsureNetwork,
    RemoveContainer,
    RemoveNetwork,
    RetireContainer,
    Secret,
    SetRoutes,
    Step,
)
from sdp_node.schedule import dependencies, exclusive, footprint, ordered

NAMES = ResourceNames("sandbox")
SHA = "a" * 40


def _spec(sandbox: str, service: str, port: int) -> ContainerSpec:
    return ContainerSpec(
        sandbox=sandbox, service=service, container=NAMES.container(sandbox, service),
        repository=service, branch="main", commit=SHA, port=port, spec_hash="h",
        public_spec={},
    )


def network(sandbox: str) -> EnsureNetwork:
    return EnsureNetwork(step_id=f"net-{sandbox}", sandbox=sandbox,
                         network=NAMES.network(sandbox))


def service(sandbox: str, name: str, port: int) -> DeployService:
    return DeployService(step_id=f"deploy-{sandbox}-{name}", spec=_spec(sandbox, name, port),
                         network=NAMES.network(sandbox))


def gateway(sandbox: str, port: int) -> DeployGateway:
    return DeployGateway(step_id=f"gateway-{sandbox}", spec=_spec(sandbox, "gateway", port),
                         routes={})


def routes(sandbox: str) -> SetRoutes:
    return SetRoutes(step_id=f"routes-{sandbox}", sandbox=sandbox,
                     container=NAMES.container(sandbox, "gateway"), routes={})


def remove(sandbox: str, name: str) -> RemoveContainer:
    return RemoveContainer(step_id=f"remove-{sandbox}-{name}",
                           container=NAMES.container(sandbox, name))


def retire(sandbox: str, name: str) -> RetireContainer:
    return RetireContainer(step_id=f"retire-{sandbox}-{name}",
                           container=NAMES.container(sandbox, name))


def drain(sandbox: str, name: str) -> DrainContainer:
    return DrainContainer(step_id=f"drain-{sandbox}-{name}",
                          container=NAMES.container(sandbox, name))


def drop_network(sandbox: str) -> RemoveNetwork:
    return RemoveNetwork(step_id=f"drop-{sandbox}", network=NAMES.network(sandbox))


def waits(steps: list[Step]) -> dict[str, set[str]]:
    found = dependencies(steps, NAMES)
    return {step.step_id: {steps[j].step_id for j in found[i]} for i, step in enumerate(steps)}


def test_sandboxes_are_independent_and_a_network_comes_before_its_containers() -> None:
    got = waits([network("a"), service("a", "account", 1), service("a", "user", 2),
                 network("b"), service("b", "account", 3)])
    assert got == {
        "net-a": set(), "deploy-a-account": {"net-a"}, "deploy-a-user": {"net-a"},
        "net-b": set(), "deploy-b-account": {"net-b"},
    }


def test_routes_wait_for_the_sandbox_s_services_and_removals_for_its_routes() -> None:
    got = waits([service("a", "account", 1), service("b", "account", 2), gateway("a", 9),
                 routes("a"), retire("a", "account"), remove("a", "user"),
                 drop_network("a"), remove("b", "user")])
    assert got["gateway-a"] == {"deploy-a-account"}
    assert got["routes-a"] == {"deploy-a-account", "gateway-a"}
    assert got["retire-a-account"] == {"deploy-a-account", "gateway-a", "routes-a"}
    assert got["remove-a-user"] == {"gateway-a", "routes-a"}
    assert got["drop-a"] == {"deploy-a-account", "gateway-a", "routes-a", "retire-a-account",
                             "remove-a-user"}
    assert got["remove-b-user"] == set()  # sandbox b's steps wait for nothing of a's


def test_one_container_or_one_port_runs_in_plan_order() -> None:
    again = service("a", "account", 5).model_copy(update={"step_id": "again"})
    got = waits([service("a", "account", 1), service("b", "account", 1),
                 retire("a", "account"), again])
    assert got["deploy-a-account"] == set()
    assert got["deploy-b-account"] == {"deploy-a-account"}  # the same port
    assert got["retire-a-account"] == {"deploy-a-account"}
    assert got["again"] == {"deploy-a-account", "retire-a-account"}


def test_a_container_name_that_may_be_another_sandbox_s_is_ordered_with_both() -> None:
    # sandbox-a-b-c: sandbox "a-b" service "c", or sandbox "a" service "b-c"
    got = waits([network("a"), remove("a-b", "c"), network("a-b"), network("x")])
    assert got["remove-a-b-c"] == {"net-a"}
    assert got["net-a-b"] == {"remove-a-b-c"}
    assert got["net-x"] == set()


def test_a_step_this_node_does_not_run_here_runs_alone() -> None:
    data = EnsureDatabase(step_id="db", sandbox="a", service="db", password=Secret("p" * 16),
                          spec_hash="h", database="sandbox_a_db", source="seed")
    got = waits([service("a", "account", 1), data, service("b", "account", 2)])
    assert got == {"deploy-a-account": set(), "db": {"deploy-a-account"},
                   "deploy-b-account": {"db"}}


def test_the_indexed_dependencies_are_exactly_the_pairwise_rule() -> None:
    """``dependencies`` finds through indexes what ``ordered`` says of every pair: the same
    sets on random plans with nested sandbox names, shared ports and steps that run alone."""
    data = EnsureDatabase(step_id="db", sandbox="a", service="db", password=Secret("p" * 16),
                          spec_hash="h", database="sandbox_a_db", source="seed")
    sandboxes, names = ["a", "a-b", "b", "x"], ["account", "b-c", "c", "user"]
    rng = random.Random(11)
    for _ in range(60):
        steps: list[Step] = []
        for index in range(rng.randint(1, 30)):
            sandbox, name, port = rng.choice(sandboxes), rng.choice(names), rng.randint(1, 6)
            step = rng.choice([
                network(sandbox), service(sandbox, name, port), gateway(sandbox, port),
                routes(sandbox), remove(sandbox, name), retire(sandbox, name),
                drain(sandbox, name), drop_network(sandbox), data,
            ])
            steps.append(step.model_copy(update={"step_id": f"s{index}"}))
        prints = [footprint(step, NAMES) for step in steps]
        pairwise = [frozenset(j for j in range(i) if ordered(prints[j], prints[i]))
                    for i in range(len(steps))]
        assert dependencies(steps, NAMES) == pairwise


def test_the_pool_runs_independent_steps_side_by_side_never_more_than_its_workers() -> None:
    workers = 3
    running = 0
    most = 0
    lock = threading.Lock()
    meet = threading.Barrier(workers, timeout=20)  # breaks unless 3 run at once

    def work(_index: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        meet.wait()
        with lock:
            running -= 1

    StepPool(workers).run([frozenset()] * 6, work)
    assert most == workers


def test_the_pool_starts_a_step_only_after_the_steps_it_waits_for() -> None:
    order: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        with lock:
            order.append(f"start {index}")
        with lock:
            order.append(f"end {index}")

    StepPool(4).run([frozenset(), frozenset({0}), frozenset({1}), frozenset({0, 2})], work)
    assert order.index("end 0") < order.index("start 1")
    assert order.index("end 1") < order.index("start 2")
    assert order.index("end 2") < order.index("start 3")


def test_steps_of_one_exclusive_group_run_one_at_a_time_and_others_run_beside_them() -> None:
    in_group = 0
    most = 0
    lock = threading.Lock()
    meet = threading.Barrier(2, timeout=20)  # the first network and the deploy, side by side

    def work(index: int) -> None:
        nonlocal in_group, most
        if index == 3:
            meet.wait()
            return
        with lock:
            in_group += 1
            most = max(most, in_group)
        if index == 0:
            meet.wait()
        with lock:
            in_group -= 1

    steps: list[Step] = [network("a"), network("b"), network("c"), service("x", "account", 1)]
    StepPool(3).run([frozenset()] * 4, work, groups=[exclusive(s) for s in steps])
    assert most == 1


def test_a_step_that_raises_does_not_stop_the_others_and_is_raised_at_the_end() -> None:
    ran: list[int] = []

    def work(index: int) -> None:
        ran.append(index)
        if index == 0:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        StepPool(2).run([frozenset(), frozenset({0}), frozenset()], work)
    assert sorted(ran) == [0, 1, 2]


def test_single_flight_runs_the_work_once_and_every_caller_gets_its_result() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0
    opened = threading.Event()
    joined = threading.Barrier(3, timeout=20)  # the leader and two callers that joined
    results: list[tuple[int, bool]] = []

    def build() -> int:
        nonlocal calls
        calls += 1
        opened.set()
        joined.wait()  # both others are waiting for this flight now
        return 42

    def caller(joining: Callable[[], None] | None) -> None:
        results.append(flights.do("commit", build, joining=joining))

    leader = threading.Thread(target=caller, args=(None,))
    leader.start()
    assert opened.wait(20)
    others = [threading.Thread(target=caller, args=(joined.wait,)) for _ in range(2)]
    for thread in others:
        thread.start()
    for thread in (leader, *others):
        thread.join(timeout=30)
    assert calls == 1
    assert sorted(results) == [(42, False), (42, True), (42, True)]


def test_single_flight_hands_the_failure_to_those_who_waited() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    opened = threading.Event()
    release = threading.Event()
    errors: list[str] = []

    def build() -> int:
        opened.set()
        release.wait(20)
        raise ValueError("compile error")

    def caller(joining: Callable[[], None] | None) -> None:
        try:
            flights.do("commit", build, joining=joining)
        except ValueError as e:
            errors.append(str(e))

    leader = threading.Thread(target=caller, args=(None,))
    leader.start()
    opened.wait(20)
    follower = threading.Thread(target=caller, args=(release.set,))
    follower.start()
    for thread in (leader, follower):
        thread.join(timeout=30)
    assert errors == ["compile error", "compile error"]


def test_port_claims_refuse_a_second_container_and_keyed_locks_let_others_by() -> None:
    claims = PortClaims()
    with claims.claim(20001, "sandbox-a-account"):
        assert claims.ports() == {20001}
        with pytest.raises(Conflict, match="20001"), claims.claim(20001, "sandbox-b-account"):
            pass
    assert claims.ports() == set()
    locks = KeyedLocks()
    def take_another() -> None:
        with locks.hold("user"):
            pass

    with locks.hold("account"):
        other = threading.Thread(target=take_another)
        other.start()
        other.join(timeout=10)
        assert not other.is_alive()  # another key is not held up


def test_a_drain_left_by_a_move_waits_for_its_container_and_is_waited_for_by_its_network() -> None:
    got = waits([service("b", "account", 1), drain("a", "account"), drain("a", "user"),
                 drop_network("a")])
    assert got["drain-a-account"] == set()  # nothing of sandbox b's, nor the other drain
    assert got["drain-a-user"] == set()
    assert got["drop-a"] == {"drain-a-account", "drain-a-user"}
