"""Clients of the agents pinned on this reconciler host: the one way to reach an agent.

The URL and the token of a node come from the host config (``hostconfig``), never from the
state; every client expects the agent to prove it is that node of this installation before
the token or a credential is sent (``node_client.NodeClient.identify``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sdp_reconciler.errors import SdpError
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.observe.node_client import NodeClient
from sdp_reconciler.state.hostconfig import HostConfig


def pinned_client(host: HostConfig, node: str, env: Mapping[str, str] | None = None, *,
                  timeout: float = 30.0, cap: float | None = None) -> NodeClient:
    """A client of ``node``'s pinned agent; SdpError when the node has no pin or token.
    ``cap`` bounds every wait of every request (``NodeClient``)."""
    pin = host.model.agents.get(node)
    if pin is None:
        known = ", ".join(sorted(host.model.agents)) or "none"
        raise SdpError(f"node {node!r} has no agent pinned in {host.path} (pinned: {known})")
    return NodeClient(node, pin.url, creds.agent_token(host, node, env),
                      installation=host.model.installation, timeout=timeout,
                      cap=cap)


__all__ = ["pinned_client"]
