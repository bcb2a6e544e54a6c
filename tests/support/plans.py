"""Building convergence steps by hand and running them through a real agent, for node tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdp_node.naming import GATEWAY
from sdp_node.protocol import (
    ContainerSpec,
    Credentials,
    DeployGateway,
    DeployService,
    EnsureNetwork,
    OperationEvent,
    Secret,
    Step,
    StepResult,
)
from sdp_reconciler.observe.node_client import NodeClient
from tests.support.names import NAMES


def spec(
    *, sandbox: str, service: str, repository: str, branch: str, commit: str, port: int,
    spec_hash: str | None = None, env: dict[str, str] | None = None,
    secret_env: dict[str, str] | None = None, **extra: Any,
) -> ContainerSpec:
    return ContainerSpec(
        sandbox=sandbox, service=service, container=NAMES.container(sandbox, service),
        repository=repository, branch=branch, commit=commit, port=port,
        spec_hash=spec_hash or f"{commit[:12]}-{port}",
        public_spec={"commit": commit, "port": port, "env": env or {}},
        env=env or {}, secret_env={k: Secret(v) for k, v in (secret_env or {}).items()},
        **extra,
    )


def deploy(spec_: ContainerSpec) -> list[Step]:
    return [
        EnsureNetwork(step_id=_id(), sandbox=spec_.sandbox, network=NAMES.network(spec_.sandbox)),
        DeployService(step_id=_id(), spec=spec_, network=NAMES.network(spec_.sandbox)),
    ]


def deploy_gateway(spec_: ContainerSpec, routes: dict[str, str]) -> list[Step]:
    assert spec_.service == GATEWAY
    return [DeployGateway(step_id=_id(), spec=spec_, routes=routes)]


def _id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Outcome:
    operation_id: str
    events: list[OperationEvent]

    @property
    def results(self) -> list[StepResult]:
        return [e.result for e in self.events if e.kind == "result" and e.result is not None]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def logs(self) -> list[str]:
        return [e.message for e in self.events if e.kind == "log"]

    def stage_events(self) -> list[str]:
        return [e.event.value for e in self.events if e.kind == "event" and e.event]

    def last(self) -> StepResult:
        return self.results[-1]


def run(
    client: NodeClient, steps: Sequence[Step], credentials: Credentials | None,
    *, holder: str = "test",
) -> Outcome:
    lease = client.acquire_lease(holder, 300)
    try:
        operation = client.apply(
            lease_id=lease.id, steps=steps, requested_by=holder, credentials=credentials
        )
        events = list(client.follow(operation))
    finally:
        client.release_lease(lease.id)
    return Outcome(operation, events)
