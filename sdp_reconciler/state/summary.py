"""One-line and per-sandbox text summaries of a loaded state (used by ``validate``)."""

from __future__ import annotations

from sdp_reconciler.state.loading import LoadedState


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summarize(state: LoadedState) -> str:
    nodes = state.nodes.model
    return ", ".join(
        [
            f"installation {nodes.installation!r}",
            _count(len(nodes.nodes), "node"),
            _count(len(state.sandboxes), "sandbox").replace("sandboxs", "sandboxes"),
            _count(len(state.templates), "template"),
            _count(len(state.environments), "environment"),
            _count(len(state.ports.model.allocations) if state.ports else 0, "port allocation"),
        ]
    )
