"""CPU seconds that dockerd, containerd, the new containers' shims, the agents and this
process's children spent during one timed section, from ``/proc/<pid>/stat``.

A process's figure is utime + stime + cutime + cstime (its own and its waited-for children's:
git and go under an agent, runc under a shim, iptables under dockerd) after minus before.
Shims are counted only when they started inside the section and serve one of the
section's own containers (their command line names the container id), so another helper's
containers started meanwhile are not counted; dockerd and containerd are one process each
and count whatever anybody asked of them.
Processes are found by ``comm`` to be *read*, never signalled. The engine is shared: another
helper's work on it is counted too, which the load average beside the figures tells.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
ENGINE = ("dockerd", "containerd")
SHIM = "containerd-shim"


def _stat(pid: int) -> tuple[float, float] | None:
    """(cpu seconds incl. waited children, start time in seconds since boot)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime..cstime are fields 14-17, starttime field 22
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK, int(fields[19]) / TICK


def _by_comm() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            found.setdefault(name, []).append(int(entry.name))
    return found


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _serves(pid: int, ids: set[str]) -> bool:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(w.decode(errors="replace") in ids for w in words)


@dataclass
class CpuSample:
    wall: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def cpu_during(agents: dict[str, int],
               own: Callable[[], set[str]] | None = None) -> Iterator[CpuSample]:
    """CPU seconds per process group during the ``with`` block; ``agents`` maps a name to a
    pid (an agent, counted with its children). ``children`` is what this process waited for
    in the block (``sdp-reconcile once``, docker-compose); ``bench`` is this process.
    ``own()`` gives the ids of the section's containers (then only their shims count)."""
    sample = CpuSample()
    comms = _by_comm()
    engine = {n: [p for p in comms.get(n, [])] for n in ENGINE}
    before = {n: sum((_stat(p) or (0.0, 0.0))[0] for p in pids) for n, pids in engine.items()}
    before |= {n: (_stat(p) or (0.0, 0.0))[0] for n, p in agents.items()}
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    since, start = _uptime(), time.perf_counter()
    yield sample
    sample.wall = time.perf_counter() - start
    after = {n: sum((_stat(p) or (0.0, 0.0))[0] for p in pids) for n, pids in engine.items()}
    after |= {n: (_stat(p) or (0.0, 0.0))[0] for n, p in agents.items()}
    sample.seconds = {n: round(after[n] - before[n], 2) for n in before}
    ids = own() if own is not None else None
    shims = [_stat(p) for p in _by_comm().get(SHIM, []) if ids is None or _serves(p, ids)]
    sample.seconds["shims"] = round(sum(s[0] for s in shims if s and s[1] >= since - 0.01), 2)
    me2, kids2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    sample.seconds["children"] = round(kids2.ru_utime + kids2.ru_stime - kids.ru_utime
                                       - kids.ru_stime, 2)
    sample.seconds["bench"] = round(me2.ru_utime + me2.ru_stime - me.ru_utime
                                    - me.ru_stime, 2)
    sample.seconds["total"] = round(sum(sample.seconds.values()), 2)
