"""Operations in flight and their event streams, with replay from any event id.

An operation is one applied convergence plan. Its events (stage events, log lines, step states
and results) are appended by the worker thread that runs it and read by any number of SSE
clients. Each event gets the next id of its operation, so a client reconnecting with
``Last-Event-ID`` resumes exactly where it stopped. Every text is redacted before it is stored:
nothing that leaves through an event can carry a credential or a secret value.
The registry keeps the last ``KEEP`` operations in memory, and nothing on disk.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from datetime import UTC, datetime

from sdp_node.protocol import (
    DeployState,
    EventName,
    OperationEvent,
    OperationSummary,
    Stage,
    StepResult,
)
from sdp_node.redact import Redactor

KEEP = 50


def now() -> datetime:
    return datetime.now(UTC)


class Operation:
    def __init__(self, *, requested_by: str, steps: int, redactor: Redactor, cap: int) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.requested_by = requested_by
        self.steps = steps
        self.started_at = now()
        self.finished_at: datetime | None = None
        self.results: list[StepResult] = []
        self._redact = redactor
        self._cap = cap
        self._events: list[OperationEvent] = []
        self._dropped = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def redact(self, text: str) -> str:
        """``text`` without this operation's credentials and secret values."""
        return self._redact(text)

    # -- writing (worker thread) --

    def emit(
        self,
        kind: str,
        *,
        step_id: str | None = None,
        stage: Stage | None = None,
        event: EventName | None = None,
        state: DeployState | None = None,
        message: str = "",
        result: StepResult | None = None,
    ) -> None:
        if result is not None:
            result = result.model_copy(
                update={
                    "message": self._redact(result.message),
                    "output_tail": [self._redact(line) for line in result.output_tail],
                }
            )
        with self._lock:
            item = OperationEvent.model_validate(
                {
                    "id": len(self._events) + self._dropped + 1,
                    "operation_id": self.id,
                    "step_id": step_id,
                    "at": now(),
                    "kind": kind,
                    "stage": stage,
                    "event": event,
                    "state": state,
                    "message": self._redact(message),
                    "result": result,
                }
            )
            if kind == "log" and len(self._events) >= self._cap:
                self._dropped += 1
                return
            self._events.append(item)
            if result is not None:
                self.results.append(result)
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def finish(self) -> None:
        ok = all(r.ok for r in self.results)
        # The end event first: whoever sees ``done`` can rely on it being there.
        self.emit("end", message="ok" if ok else "failed")
        self.finished_at = now()

    # -- reading (any thread or event loop) --

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def events_after(self, last_id: int) -> list[OperationEvent]:
        with self._lock:
            return [e for e in self._events if e.id > last_id]

    async def wait_after(self, last_id: int, timeout: float) -> list[OperationEvent]:
        """Events after ``last_id``; waits up to ``timeout`` seconds when there are none yet."""
        loop = asyncio.get_running_loop()
        with self._lock:
            fresh = [e for e in self._events if e.id > last_id]
            if fresh or self.done:
                return fresh
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return []
        return self.events_after(last_id)

    def summary(self) -> OperationSummary:
        return OperationSummary(
            id=self.id,
            requested_by=self.requested_by,
            started_at=self.started_at,
            finished_at=self.finished_at,
            done=self.done,
            ok=all(r.ok for r in self.results) if self.done else None,
            steps=self.steps,
            results=list(self.results),
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Operations:
    """The registry: create, look up, list."""

    def __init__(self, *, cap: int = 20000) -> None:
        self._items: OrderedDict[str, Operation] = OrderedDict()
        self._lock = threading.Lock()
        self._cap = cap

    def create(self, *, requested_by: str, steps: int, redactor: Redactor) -> Operation:
        operation = Operation(
            requested_by=requested_by, steps=steps, redactor=redactor, cap=self._cap
        )
        with self._lock:
            self._items[operation.id] = operation
            while len(self._items) > KEEP:
                oldest = next(iter(self._items))
                if not self._items[oldest].done:
                    break
                self._items.pop(oldest)
        return operation

    def get(self, operation_id: str) -> Operation | None:
        with self._lock:
            return self._items.get(operation_id)

    def all(self) -> list[Operation]:
        with self._lock:
            return list(self._items.values())

    def in_flight(self) -> list[str]:
        return [o.id for o in self.all() if not o.done]
