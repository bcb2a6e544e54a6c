"""What every step shares: its event context (stages, log lines, the tail kept for a failure
report), the failure it raises, and the store of each container's last applied spec."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdp_node.errors import NodeError
from sdp_node.operations import Operation
from sdp_node.protocol import (
    STAGE_EVENTS,
    Credentials,
    DeployState,
    FailureReason,
    ObservedFailure,
    Stage,
)

TAIL = 30


class StepFailed(Exception):
    def __init__(self, stage: Stage | None, message: str, tail: list[str], *,
                 reason: FailureReason | None = None, answer: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.tail = tail
        self.reason = reason
        """set when the commit itself failed (remembered, not retried): build, crash, health"""
        self.answer = answer


class StepContext:
    """Events of one step: stages, log lines, and the tail kept for a failure report."""

    def __init__(self, operation: Operation, step_id: str, credentials: Credentials | None):
        self.operation = operation
        self.step_id = step_id
        self.credentials = credentials
        self.current: Stage | None = None
        self.tail: deque[str] = deque(maxlen=TAIL)

    def log(self, line: str) -> None:
        self.tail.append(line)
        self.operation.emit("log", step_id=self.step_id, stage=self.current, message=line)

    def state(self, state: DeployState, message: str = "") -> None:
        self.operation.emit("state", step_id=self.step_id, state=state, message=message)

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        started, completed = STAGE_EVENTS.get(stage, (None, None))
        self.current = stage
        self.tail.clear()
        if started:
            self.operation.emit("event", step_id=self.step_id, stage=stage, event=started)
        try:
            yield
        except StepFailed:
            raise
        except NodeError as e:
            raise StepFailed(stage, str(e), list(self.tail)) from e
        if completed:
            self.operation.emit("event", step_id=self.step_id, stage=stage, event=completed)


class SpecStore:
    """The last applied public spec of each container (secret values never reach it)."""

    def __init__(self, workspace: Path) -> None:
        self._dir = workspace / "specs"
        self._dir.mkdir(parents=True, exist_ok=True)

    def save(self, container: str, spec: dict[str, Any]) -> None:
        partial = self._dir / f".{container}.json.partial"
        partial.write_text(json.dumps(spec, sort_keys=True, indent=1))
        os.replace(partial, self._dir / f"{container}.json")

    def forget(self, container: str) -> None:
        (self._dir / f"{container}.json").unlink(missing_ok=True)

    def get(self, container: str) -> dict[str, Any] | None:
        try:
            loaded = json.loads((self._dir / f"{container}.json").read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in sorted(self._dir.glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return out


class FailureStore:
    """The last failed deploy of each container, by spec hash: a commit that failed to build,
    crashed on start or never became healthy is not tried again for the same spec (the spec
    hash covers the commit and every setting) until a restart asks (``recreate``)."""

    def __init__(self, workspace: Path) -> None:
        self._dir = workspace / "failures"
        self._dir.mkdir(parents=True, exist_ok=True)

    def save(self, failure: ObservedFailure) -> None:
        partial = self._dir / f".{failure.container}.json.partial"
        partial.write_text(failure.model_dump_json(indent=1))
        os.replace(partial, self._dir / f"{failure.container}.json")

    def get(self, container: str) -> ObservedFailure | None:
        path = self._dir / f"{container}.json"
        try:
            return ObservedFailure.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None

    def forget(self, container: str) -> None:
        (self._dir / f"{container}.json").unlink(missing_ok=True)

    def all(self) -> list[ObservedFailure]:
        out = []
        for path in sorted(self._dir.glob("*.json")):
            failure = self.get(path.stem)
            if failure is not None:
                out.append(failure)
        return out
