"""Host port blocks for test installations, never shared between two test runs on one machine.

Published ports are global to the host, like container names. Each test run claims one *lane*
of ports (a lock file holding the pid of the process that runs it, in the temporary directory;
a lane whose process is gone is taken over) and hands out blocks from it in turn, skipping
ports that something holds right now. Under pytest-xdist the run's controller holds the lane
(its first worker claims it in the controller's name, the others find it) and each worker
hands out blocks from its own half of it (more than two workers: a lane per two). Two runs,
or a run and the demo (whose ports are below 10000), never pick the same port.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

LANES = 8
LANE_SIZE = 1500
FIRST_PORT = 20000
_DIR = Path(tempfile.gettempdir()) / "sdp-test-port-lanes"
_lock = threading.Lock()
_range: tuple[int, int] | None = None  # (first port, size) of this process's part of the lane
_cursor = 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker() -> tuple[int, int] | None:
    """(index, count) of this xdist worker; None outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (name.startswith("gw") and name[2:].isdigit() and count.isdigit()):
        return None
    return int(name[2:]), int(count)


@contextlib.contextmanager
def _claiming() -> Iterator[None]:
    """One claimer at a time, so that a run's workers agree on their lane."""
    with (_DIR / ".claim.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _owned(owner: int) -> list[int]:
    lanes = []
    for lane in range(LANES):
        with contextlib.suppress(OSError, ValueError):
            if int((_DIR / f"lane-{lane}").read_text() or "0") == owner:
                lanes.append(lane)
    return lanes


def _claim(owner: int, count: int = 1) -> list[int]:
    """The ``count`` lanes held for ``owner`` (a pid): those it holds, claiming free ones."""
    _DIR.mkdir(exist_ok=True)
    with _claiming():
        held = _owned(owner)
        for _attempt in range(3):
            for lane in range(LANES):
                if len(held) >= count:
                    return sorted(held)[:count]
                path = _DIR / f"lane-{lane}"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    with contextlib.suppress(OSError, ValueError):
                        if not _alive(int(path.read_text() or "0")):
                            path.unlink()
                    continue
                with os.fdopen(fd, "w") as handle:
                    handle.write(str(owner))
                if owner == os.getpid():
                    atexit.register(lambda p=path: p.unlink(missing_ok=True))
                # A worker leaves the file to its controller (release_lanes, at the end of the
                # run): the other workers may still use the lane after this one exits.
                held.append(lane)
        if len(held) >= count:
            return sorted(held)[:count]
    raise RuntimeError(f"all {LANES} test port lanes in {_DIR} are held by running processes")


def release_lanes() -> None:
    """Free the lanes held in this process's name (by its xdist workers, for a controller)."""
    with contextlib.suppress(OSError):
        for path in _DIR.glob("lane-*"):
            with contextlib.suppress(OSError, ValueError):
                if int(path.read_text() or "0") == os.getpid():
                    path.unlink()


def _my_range() -> tuple[int, int]:
    """This process's ports: a lane of its own, or half of one of its controller's lanes
    (worker i of n: a run holds ceil(n/2) lanes, two workers share each)."""
    worker = _worker()
    if worker is None:
        return FIRST_PORT + _claim(os.getpid())[0] * LANE_SIZE, LANE_SIZE
    index, count = worker
    count = max(count, index + 1)
    lanes = _claim(os.getppid(), (count + 1) // 2)
    size = LANE_SIZE if count == 1 else LANE_SIZE // 2
    return FIRST_PORT + lanes[index // 2] * LANE_SIZE + (index % 2) * size, size


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
    global _range, _cursor
    with _lock:
        if _range is None:
            _range = _my_range()
        base, span = _range
        for _ in range(span // size):
            if _cursor + size > span:
                _cursor = 0
            first = base + _cursor
            _cursor += size
            if all(_free(p) for p in range(first, first + size)):
                return first, first + size - 1
    raise RuntimeError(f"no free block of {size} ports in this run's lane")


__all__ = ["port_block", "release_lanes"]
