"""Fixtures of the INFRA tests: the shared data servers, a snapshot to clone, INFRA agents.

Each test gets its own SDP installation name, so its markers are its own; afterwards every
object carrying them is dropped, and the agents it started are stopped by pid.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdp_testbed.dataservers import DataServers, ensure_started
from tests.support.agents import AgentProcess
from tests.support.data import (
    Snapshot,
    cleanup_installation,
    data_settings,
    drop_database,
    infra_agent,
    make_snapshot,
)


@pytest.fixture(scope="session")
def data_servers() -> DataServers:
    """PostgreSQL, Redis and RabbitMQ, started by .ci/start-data-servers (or here, if not)."""
    try:
        return ensure_started(wait=True)
    except (SystemExit, OSError, TimeoutError) as e:
        pytest.fail(f"the data servers are not available ({e}); start them with: "
                    "bash .ci/start-data-servers (after bash scripts/setup)")


@pytest.fixture(scope="session")
def snapshot(data_servers: DataServers, tmp_path_factory: pytest.TempPathFactory)\
        -> Iterator[Snapshot]:
    made = make_snapshot(data_servers, tmp_path_factory.mktemp("dumps"))
    yield made
    drop_database(data_servers, made.template)


@pytest.fixture
def data_installation(data_servers: DataServers) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    cleanup_installation(data_servers, name, ["infra-1", "infra-2"])


@pytest.fixture
def make_infra_agent(
    tmp_path: Path, data_servers: DataServers, snapshot: Snapshot, data_installation: str,
) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def make(*, name: str = "infra-1", installation: str | None = None,
             start: bool = True, **postgresql: Any) -> AgentProcess:
        agent = infra_agent(tmp_path, installation=installation or data_installation,
                            name=name, data=data_settings(data_servers, snapshot, **postgresql))
        started.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in started:
        agent.stop()
