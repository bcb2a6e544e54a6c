"""Host port blocks for test installations, never shared between two test runs on one machine.

Published ports are global to the host, like container names. Each test process claims one
*lane* of ports (a lock file holding its pid, in the temporary directory; a lane whose process
is gone is taken over) and hands out blocks from it in turn, skipping ports that something
holds right now. Two runs, or a run and the demo (whose ports are below 10000), never pick the
same port.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import tempfile
import threading
from pathlib import Path

LANES = 8
LANE_SIZE = 1500
FIRST_PORT = 20000
_DIR = Path(tempfile.gettempdir()) / "sdp-test-port-lanes"
_lock = threading.Lock()
_lane: int | None = None
_cursor = 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim() -> int:
    _DIR.mkdir(exist_ok=True)
    for _attempt in range(3):
        for lane in range(LANES):
            path = _DIR / f"lane-{lane}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                with contextlib.suppress(OSError, ValueError):
                    if not _alive(int(path.read_text() or "0")):
                        path.unlink()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            atexit.register(lambda p=path: p.unlink(missing_ok=True))
            return lane
    raise RuntimeError(f"all {LANES} test port lanes in {_DIR} are held by running processes")


def _free(port: int) -> bool:
    with socket.socket() as s:
        # Like Docker's proxy: a port whose last connections are in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def port_block(size: int = 20) -> tuple[int, int]:
    """(first, last) of ``size`` ports of this process's lane, all free right now."""
    global _lane, _cursor
    with _lock:
        if _lane is None:
            _lane = _claim()
        base = FIRST_PORT + _lane * LANE_SIZE
        for _ in range(LANE_SIZE // size):
            if _cursor + size > LANE_SIZE:
                _cursor = 0
            first = base + _cursor
            _cursor += size
            if all(_free(p) for p in range(first, first + size)):
                return first, first + size - 1
    raise RuntimeError(f"no free block of {size} ports in this run's lane")


__all__ = ["port_block"]
