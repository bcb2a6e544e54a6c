"""The agents' container samples of a pass, as history rows (for the page's charts and
``/metrics``). Pure."""

from __future__ import annotations

from typing import Any

from sdp_reconciler.planner.world import World


def sample_rows(world: World) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for node, view in sorted(world.nodes.items()):
        for name, metrics in sorted(view.metrics.items()):
            if not metrics.sandbox or not metrics.service:
                continue
            for sample in metrics.samples:
                rows.append({
                    "sandbox": metrics.sandbox, "service": metrics.service, "node": node,
                    "container": name, "at": sample.at.isoformat(), "state": sample.state,
                    "cpu_percent": sample.cpu_percent, "memory_bytes": sample.memory_bytes,
                    "memory_limit_bytes": sample.memory_limit_bytes,
                    "restart_count": sample.restart_count, "health": sample.health,
                })
    return rows


__all__ = ["sample_rows"]
