"""Small CPU and memory charts of a service, as inline SVG rendered on the server.

Pure: samples in, escaped markup out (no script, no style attribute: the page's CSP allows
neither inline). Each chart carries its figures as text too (``<title>`` and an
``aria-label``), so it reads without seeing the line; ``data-points`` counts the samples drawn.
The sandbox fragment that holds them is refetched on every ``status`` event of the page's one
SSE stream, so the charts follow the samples each pass records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup
from msgspec import Struct, field

WIDTH, HEIGHT, PAD = 160, 36, 2


def size(value: float | None) -> str:
    if value is None:
        return "—"
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value >= factor:
            return f"{value / factor:.0f}{unit}"
    return f"{value:.0f}B"


def sparkline(values: Sequence[float | None], *, maximum: float, label: str,
              kind: str) -> Markup:
    """A polyline of ``values`` (None: a gap is skipped) scaled to ``maximum``."""
    points = [v for v in values if v is not None]
    top = max(maximum, max(points, default=0.0), 1e-9)
    count = len(values)
    coords = []
    for index, value in enumerate(values):
        if value is None:
            continue
        x = PAD + (WIDTH - 2 * PAD) * (index / (count - 1) if count > 1 else 1.0)
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * min(value, top) / top
        coords.append(f"{x:.1f},{y:.1f}")
    line = Markup('<polyline fill="none" stroke="currentColor" stroke-width="1.5" '
                  'points="{}"/>').format(" ".join(coords)) if coords else Markup()
    return Markup(
        '<svg class="chart" data-kind="{kind}" data-points="{count}" viewBox="0 0 {w} {h}" '
        'width="{w}" height="{h}" role="img" aria-label="{label}"><title>{label}</title>'
        '<rect x="0.5" y="0.5" width="{w1}" height="{h1}" fill="none" stroke="currentColor" '
        'stroke-opacity="0.2"/>{line}</svg>'
    ).format(kind=kind, count=len(coords), w=WIDTH, h=HEIGHT, w1=WIDTH - 1, h1=HEIGHT - 1,
             label=label, line=line)


class ResourceView(Struct):
    service: str
    samples: int = 0
    cpu_now: float | None = None
    memory_now: float | None = None
    memory_limit: float | None = None
    restarts: int = 0
    cpu_chart: Markup = field(default_factory=Markup)
    memory_chart: Markup = field(default_factory=Markup)

    @property
    def cpu_text(self) -> str:
        return "—" if self.cpu_now is None else f"{self.cpu_now:.1f}%"

    @property
    def memory_text(self) -> str:
        if self.memory_now is None:
            return "—"
        if self.memory_limit:
            share = 100 * self.memory_now / self.memory_limit
            return f"{size(self.memory_now)} of {size(self.memory_limit)} ({share:.0f}%)"
        return size(self.memory_now)


def resource_views(rows: Sequence[dict[str, Any]]) -> dict[str, ResourceView]:
    """Service -> its charts, from sample rows (oldest first) of one sandbox."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_service.setdefault(str(row["service"]), []).append(row)
    views = {}
    for service, samples in sorted(by_service.items()):
        cpu = [r["cpu_percent"] for r in samples]
        memory = [r["memory_bytes"] for r in samples]
        last = samples[-1]
        limit = last["memory_limit_bytes"]
        cpu_now, memory_now = last["cpu_percent"], last["memory_bytes"]
        span = (datetime.fromisoformat(str(last["at"]))
                - datetime.fromisoformat(str(samples[0]["at"]))).total_seconds()
        minutes = max(1, round(span / 60))
        view = ResourceView(
            service=service, samples=len(samples), cpu_now=cpu_now, memory_now=memory_now,
            memory_limit=limit, restarts=int(last["restart_count"] or 0),
        )
        view.cpu_chart = sparkline(
            cpu, maximum=100.0, kind="cpu",
            label=f"CPU of {service}, last {len(samples)} samples (~{minutes} min): now "
                  f"{view.cpu_text}")
        view.memory_chart = sparkline(
            memory, maximum=float(limit or max((m for m in memory if m), default=1)),
            kind="memory",
            label=f"Memory of {service}, last {len(samples)} samples: now {view.memory_text}")
        views[service] = view
    return views


class SandboxLoad(Struct):
    """The overview's one line per sandbox: its services' health counts and current load."""

    health: dict[str, int]
    cpu_percent: float | None
    memory_bytes: float | None

    @property
    def text(self) -> str:
        counts = ", ".join(f"{n} {h}" for h, n in sorted(self.health.items())) or "no services"
        load = ""
        if self.cpu_percent is not None or self.memory_bytes is not None:
            cpu = "—" if self.cpu_percent is None else f"{self.cpu_percent:.1f}%"
            load = f"; CPU {cpu}, memory {size(self.memory_bytes)}"
        return counts + load


def sandbox_loads(lines: dict[str, list[str]],
                  latest: Sequence[dict[str, Any]]) -> dict[str, SandboxLoad]:
    """Sandbox -> its summary, from each sandbox's service healths and the latest samples."""
    loads = {}
    for sandbox, healths in lines.items():
        counts: dict[str, int] = {}
        for health in healths:
            counts[health] = counts.get(health, 0) + 1
        mine = [r for r in latest if r["sandbox"] == sandbox]
        cpu = [float(r["cpu_percent"]) for r in mine if r["cpu_percent"] is not None]
        memory = [float(r["memory_bytes"]) for r in mine if r["memory_bytes"] is not None]
        loads[sandbox] = SandboxLoad(counts, sum(cpu) if cpu else None,
                                     sum(memory) if memory else None)
    return loads


__all__ = ["ResourceView", "SandboxLoad", "resource_views", "sandbox_loads", "size",
           "sparkline"]
