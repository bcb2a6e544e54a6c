"""The environment of every process the agent starts on the host (go, composer, php -l).

The agent's own environment holds its bearer token (``token: {env: ...}``) and may hold
anything else its operator put there (proxy passwords, cloud keys). None of it is inherited:
a child gets a search path, a neutral locale and only the variables its caller names, so a
tool, or branch content a tool reads, can never print or pass on a secret of the agent.
"""

from __future__ import annotations

import os

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_environment(**variables: str) -> dict[str, str]:
    """``PATH`` (the agent's, which names directories, not secrets), ``LANG=C.UTF-8`` and
    ``variables``; empty values are left out."""
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "LANG": "C.UTF-8", **variables}
    return {name: value for name, value in env.items() if value != ""}


__all__ = ["DEFAULT_PATH", "child_environment"]
