"""Every secret this reconciler process holds, and the one redactor built from them.

A value is registered the moment it is resolved (``credentials``: git credentials, agent
tokens, the spec-hash key, environment secrets, notification webhook URLs, the webhook
secret), so nothing that holds a secret can forget to say so. The registry is applied where
text leaves the process: the history (every text column, ``history.History``), the command
line (``say`` and the error printer of ``cli.main``), notifications and the page's messages.
Encoded forms are covered too (``sdp_node.redact``: percent-encoding, base64 of the value
and of ``user:password``).
"""

from __future__ import annotations

import io
import threading
from typing import TextIO

from sdp_node.redact import Redactor


class SecretRegistry:
    """Values to hide, added as they become known; calling it redacts a text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pairs: set[tuple[str, str]] = set()
        self._redactor = Redactor()
        self._lock = threading.Lock()

    def add(self, *values: str) -> None:
        with self._lock:
            new = {v for v in values if v and v not in self._values}
            if new:
                self._values |= new
                self._rebuild()

    def add_pair(self, user: str, password: str) -> None:
        """A username and password, whose ``user:password`` base64 is hidden too."""
        with self._lock:
            if (user, password) not in self._pairs:
                self._pairs.add((user, password))
                self._values |= {user, password}
                self._rebuild()

    def _rebuild(self) -> None:
        self._redactor = Redactor(self._values, pairs=self._pairs)

    def __call__(self, text: str) -> str:
        return self._redactor(text)


SECRETS = SecretRegistry()
"""This process's registry."""


def redact(text: str) -> str:
    return SECRETS(text)


class RedactingWriter(io.TextIOBase):
    """A text stream that redacts each line before passing it on (the CLI's stdout/stderr).

    Lines are held until their newline (or a flush), so a secret written in pieces is still
    seen whole.
    """

    def __init__(self, target: TextIO, registry: SecretRegistry = SECRETS) -> None:
        self._target = target
        self._registry = registry
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self._target.write(self._registry(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._target.write(self._registry(self._pending))
            self._pending = ""
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")


__all__ = ["SECRETS", "RedactingWriter", "SecretRegistry", "redact"]
