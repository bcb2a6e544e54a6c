"""Plain helpers for testbed tests (fixtures live in conftest.py)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdp_testbed.waiting import wait_for


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for servers that cannot take port 0 themselves)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_tree(root: Path, files: Mapping[str, bytes | None]) -> Path:
    """Write a file set (as the fixtures return them) under `root`; return `root`."""
    for relative, content in files.items():
        if content is None:
            continue
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def published_port(container: Any, container_port: str) -> int:
    container.reload()
    bindings = container.ports.get(container_port) or []
    if not bindings:
        raise AssertionError(f"{container.name}: {container_port} is not published")
    return int(bindings[0]["HostPort"])


def wait_for_port(port: int, *, timeout: float = 10.0) -> None:
    def probe() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    wait_for(probe, what=f"a listener on 127.0.0.1:{port}", timeout=timeout)
