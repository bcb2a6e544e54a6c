"""A dulwich client for a git remote, with per-call credentials: shared by the agents
(``git.py``) and the reconciler (its state checkout, ``sdp_reconciler.apply.statesync``).

Part of what the reconciler may import from ``sdp_node`` (with ``protocol``, ``naming``,
``redact`` and ``errors``): it imports nothing of the agent. Credentials travel only as
dulwich's ``username=``/``password=`` arguments, never in a URL, argv or file; host git
configuration is ignored (``ConfigDict()``); the Basic-auth header carries them as UTF-8.
"""

from __future__ import annotations

import base64
from typing import Any

import urllib3.util
from dulwich.client import default_urllib3_manager, get_transport_and_path
from dulwich.config import ConfigDict

from sdp_node.errors import GitError
from sdp_node.protocol import Credentials

NETWORK_TIMEOUT = 60.0


def _header_encoding() -> str:
    """The codec urllib3's ``make_headers`` encodes Basic-auth text with (latin-1 today)."""
    header = urllib3.util.make_headers(basic_auth="\u00e9")["authorization"]
    return "latin-1" if base64.b64decode(header.split()[1]) == b"\xe9" else "utf-8"


_HEADER_ENCODING = _header_encoding()


def dulwich_credentials(credentials: Credentials) -> tuple[str, str]:
    """The username and password to hand dulwich so its Basic-auth header is UTF-8.

    dulwich builds the header with urllib3's ``make_headers``, which encodes the text as
    latin-1: ``é`` would go out as the byte 0xE9 (refused by servers that decode UTF-8, as
    Bitbucket and git-http-backend behind Apache do) and ``€`` would not encode at all. Spelling
    the UTF-8 bytes as the characters of that codec makes the header carry exactly those bytes.
    """
    def wire(value: str) -> str:
        return value.encode("utf-8").decode(_HEADER_ENCODING)

    return wire(credentials.username.reveal()), wire(credentials.password.reveal())


def remote_client(url: str, credentials: Credentials | None) -> tuple[object, str]:
    """A dulwich client for ``url`` with per-call credentials and no host git config."""
    config = ConfigDict()
    username, password = dulwich_credentials(credentials) if credentials else (None, None)
    try:
        manager: Any = default_urllib3_manager(config, timeout=NETWORK_TIMEOUT)
        return get_transport_and_path(
            url, config=config, username=username, password=password, pool_manager=manager
        )
    except ValueError as e:
        raise GitError(f"cannot use remote URL {url!r}: {e}") from None
