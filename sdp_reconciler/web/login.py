"""Checking a viewer's Bitbucket login: ls-remote of the gateway repository, through its agent.

``GatewayLogin`` asks a GATEWAY node's agent for the branches of its PHP repository with the
username and password typed on the login page (``NodeClient.branches``). The agent answers
403 when the git server refuses them (LOGIN FAILED). The password lives only in this call: it
is wrapped in a ``Secret`` at once, sent in one request body and dropped; it is never stored,
logged or used for anything else. Any message shown to the viewer passes through a redactor
holding the username and password first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from sdp_node.protocol import Credentials, RepositoryKind, Secret
from sdp_node.redact import Redactor
from sdp_reconciler.errors import AgentError, AgentIdentityError, NodeUnreachable, SdpError
from sdp_reconciler.observe.agents import pinned_client
from sdp_reconciler.observe.node_client import NodeClient
from sdp_reconciler.redaction import SECRETS
from sdp_reconciler.state.hostconfig import require_host_config
from sdp_reconciler.state.loading import LoadedState
from sdp_reconciler.state.models import NodeType


class LoginRefused(Exception):
    """The git server refused the username or password."""


class LoginUnavailable(Exception):
    """The login could not be checked (no gateway node, agent unreachable, state invalid).

    ``str()`` is what a viewer who is not signed in may read (which node, what kind of
    failure); ``detail`` adds the agents' own messages, addresses included, for the log.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class LoginCheck(Protocol):
    def __call__(self, username: str, password: str) -> None:
        """Return when the credentials are good; raise LoginRefused or LoginUnavailable."""


class GatewayLogin:
    """The real check, against the state's GATEWAY nodes in name order."""

    def __init__(self, state: Callable[[], LoadedState], env: Mapping[str, str], *,
                 timeout: float) -> None:
        self._state = state
        self._env = env
        self._timeout = timeout

    def __call__(self, username: str, password: str) -> None:
        redact = Redactor([username, password], pairs=[(username, password)])
        credentials = Credentials(username=Secret(username), password=Secret(password))
        try:
            state = self._state()
        except SdpError as e:
            raise LoginUnavailable("the login cannot be checked while the state directory has "
                                   "problems", f"the state directory cannot be loaded: {e}"
                                   ) from None
        gateways = sorted((n for n in state.nodes.model.nodes if n.type is NodeType.GATEWAY),
                          key=lambda n: n.name)
        if not gateways:
            raise LoginUnavailable("nodes.yaml names no GATEWAY node to check logins with")
        try:
            host = require_host_config(self._env)
        except SdpError as e:
            raise LoginUnavailable("the login cannot be checked: this host has no reconciler "
                                   "config", str(e)) from None
        public: list[str] = []
        details: list[str] = []
        for node in gateways:
            try:
                client = pinned_client(host, node.name, self._env, timeout=self._timeout)
            except SdpError as e:
                public.append(f"node {node.name}: its agent is not pinned on this host")
                details.append(str(e))
                continue
            with client:
                try:
                    repository = _gateway_repository(client, state)
                    client.branches(repository, credentials)
                    return
                except AgentError as e:
                    if e.status == 403:
                        raise LoginRefused("LOGIN FAILED: Bitbucket refused the username or "
                                           "password") from None
                    public.append(f"node {node.name}: its agent answered HTTP {e.status}")
                    details.append(SECRETS(redact(str(e))))
                except (NodeUnreachable, AgentIdentityError) as e:
                    public.append(f"node {node.name}: its agent is unreachable")
                    details.append(SECRETS(redact(str(e))))
                except LoginUnavailable as e:
                    public.append(str(e))
                    details.append(e.detail)
        raise LoginUnavailable("the login cannot be checked now (" + "; ".join(public) + ")",
                               "; ".join(details))


def _gateway_repository(client: NodeClient, state: LoadedState) -> str:
    """The gateway repository: the one sandboxes name, else the node's first PHP one."""
    php = sorted(r.name for r in client.repositories() if r.kind is RepositoryKind.PHP)
    gateways = [d.model.gateway for d in state.sandboxes.values()]
    gateways += [d.model.gateway for d in state.templates.values()]
    named = sorted({g.repository for g in gateways if g is not None and g.repository})
    for name in named:
        if name in php:
            return name
    if not php:
        raise LoginUnavailable(f"node {client.name} serves no PHP repository to check logins")
    return php[0]
