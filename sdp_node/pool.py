"""Running a plan's steps side by side, and doing shared work once.

* ``StepPool`` runs the steps of one plan on at most ``workers`` threads, each step only once
  every step it waits for (``sdp_node.schedule.dependencies``) has finished, whatever its
  outcome (as one after another: a failed step does not stop the plan), and never beside a
  step of its exclusive group (``sdp_node.schedule.exclusive``). Ready steps start in plan
  order. A step's own events come from its one thread, in order; steps of different
  sandboxes interleave in the operation's stream, each event carrying its step id.
* ``SingleFlight`` does the work for a key once while it is in flight: a caller that asks for
  a key another caller is working on waits for that caller's result (or its exception) and
  gets it too. The go build of one commit for several sandboxes of a plan runs once.
* ``KeyedLocks`` serialise the callers of one key (a repository's fetch, a commit's tree) and
  nobody else.
* ``PortClaims`` are the host ports of deploys in flight: the port guard counts them before
  their containers exist, so a rule written for one deploy's port is never dropped by another
  step's rewrite of the chain.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Generic, TypeVar

from msgspec import Struct, field

from sdp_node.errors import Conflict

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def default_workers() -> int:
    """min(4, 2 x CPUs): steps mostly wait (for Docker, a health path, a compiler), so two per
    core keep the machine busy without letting one plan's 40 deploys fight for it."""
    return min(4, 2 * (os.cpu_count() or 1))


class StepPool:
    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a step pool needs at least one worker")
        self.workers = workers
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Steps running now."""
        with self._lock:
            return self._busy

    def run(self, waits_for: Sequence[frozenset[int]], work: Callable[[int], None], *,
            groups: Sequence[str | None] | None = None) -> None:
        """``work(i)`` for every step ``i``, after every step in ``waits_for[i]``, and never
        beside another step of its group (``groups[i]``, None: no group). Returns when all
        have run; an exception escaping ``work`` is raised then (the first, by index), after
        the other steps ran."""
        count = len(waits_for)
        if count == 0:
            return
        group_of = list(groups) if groups is not None else [None] * count
        done: set[int] = set()
        started: set[int] = set()
        errors: dict[int, BaseException] = {}
        running: dict[Future[None], int] = {}

        def task(index: int) -> None:
            with self._lock:
                self._busy += 1
            try:
                work(index)
            finally:
                with self._lock:
                    self._busy -= 1

        with ThreadPoolExecutor(max_workers=min(self.workers, count),
                                thread_name_prefix="sdp-step") as executor:
            while len(done) < count:
                for index in range(count):
                    if len(running) >= self.workers:
                        break
                    busy = {group_of[i] for i in running.values()}
                    group = group_of[index]
                    if index not in started and waits_for[index] <= done \
                            and (group is None or group not in busy):
                        started.add(index)
                        running[executor.submit(task, index)] = index
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    done.add(index)
                    error = future.exception()
                    if error is not None:
                        errors[index] = error
        if errors:
            raise errors[min(errors)]


class _Flight(Struct, Generic[V]):
    finished: threading.Event = field(default_factory=threading.Event)
    value: V | None = None
    error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}
        self._lock = threading.Lock()

    def do(self, key: K, work: Callable[[], V], *,
           joining: Callable[[], None] | None = None) -> tuple[V, bool]:
        """(the result of ``work``, whether it was another caller's). ``joining`` is called
        before waiting for another caller's flight."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if joining is not None:
                joining()
            flight.finished.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.value is not None
            return flight.value, True
        try:
            flight.value = work()
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.finished.set()
        return flight.value, False


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class PortClaims:
    def __init__(self) -> None:
        self._holders: dict[int, str] = {}
        self._depth: Counter[int] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def claim(self, port: int, container: str) -> Iterator[None]:
        """``port`` is ``container``'s while the block runs; another container's claim of it
        at the same time is a ``Conflict`` (the schedule never lets that happen)."""
        with self._lock:
            holder = self._holders.get(port)
            if holder is not None and holder != container:
                raise Conflict(f"port {port} is being taken by {holder} in this plan; "
                               f"{container} cannot have it too")
            self._holders[port] = container
            self._depth[port] += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth[port] -= 1
                if self._depth[port] == 0:
                    del self._depth[port]
                    del self._holders[port]

    def ports(self) -> set[int]:
        with self._lock:
            return set(self._holders)


__all__ = ["KeyedLocks", "PortClaims", "SingleFlight", "StepPool", "default_workers"]
