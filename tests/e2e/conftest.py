"""The end-to-end tests' installation: a fresh ``Stack`` per test (agents, repositories,
OCP stand-ins, a state repository), stopped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sdp_node.protocol import Credentials
from tests.e2e.stack import Stack, build_stack, stop_stack
from tests.support.agents import AgentProcess


@pytest.fixture
def stack(
    tmp_path: Path, installation: str, make_agent: Callable[..., AgentProcess],
    make_repo: Callable[[str], tuple[Path, str]], images: dict[str, str], canary: Credentials,
) -> Iterator[Stack]:
    built = build_stack(tmp_path, installation, make_agent, make_repo, images, canary)
    try:
        yield built
    finally:
        stop_stack(built)
