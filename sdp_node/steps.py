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
from sdp_node.protocol import STAGE_EVENTS, Credentials, DeployState, Stage

TAIL = 30


class StepFailed(Exception):
    def __init__(self, stage: Stage | None, message: str, tail: list[str]) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.tail = tail


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

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in sorted(self._dir.glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return out
