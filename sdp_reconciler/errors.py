"""The reconciler's exceptions: a small hierarchy whose messages tell the user what to change.

``SdpError`` is the root; the CLI prints its message and exits 1 without a traceback. Errors of
the libraries underneath (httpx, dulwich, sqlite3, OS errors) are translated where they are
called (``raise SdpError(...) from e``) so that no caller needs to know them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sdp_reconciler.state.locations import Problem


class SdpError(Exception):
    """Something the user can act on; ``str()`` is the whole message."""


class StateError(SdpError):
    """The state directory is invalid; ``problems`` holds every problem found, sorted."""

    def __init__(self, problems: Sequence[Problem], *, subject: str = "the state") -> None:
        self.problems = sorted(set(problems))
        count = len(self.problems)
        lines = [str(p) for p in self.problems]
        super().__init__(
            "\n".join([*lines, f"{count} problem{'s' if count != 1 else ''} in {subject}"])
        )


class NodeUnreachable(SdpError):
    """An agent did not answer (connection refused, timeout, TLS)."""


class AgentIdentityError(SdpError):
    """An agent did not prove it is the pinned node of this installation; nothing secret was
    sent to it."""


class AgentError(SdpError):
    """An agent answered with an error; the message is the agent's, which names the cause."""

    def __init__(self, node: str, status: int, message: str) -> None:
        self.node = node
        self.status = status
        super().__init__(f"node {node}: {message}")


class CredentialsError(SdpError):
    """Git credentials are missing, unreadable or refused (LOGIN FAILED)."""


class LeaseRefused(SdpError):
    """Another reconciler holds the lease on a node."""
