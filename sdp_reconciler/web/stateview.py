"""The state directory as the page reads it: loaded on demand, reloaded when a file changes.

``StateView.current()`` returns the ``LoadedState`` or raises the ``SdpError`` (usually a
``StateError`` listing every problem) that loading gave. The result is kept until the
directory's YAML files change (name, size or modification time), so pages and the login check
do not parse the state on every request, and ``watch`` shows edits as soon as they land.
Reading only: nothing here writes to the state directory or resolves a secret.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from sdp_reconciler.errors import SdpError
from sdp_reconciler.state.hostconfig import host_rules
from sdp_reconciler.state.loading import LoadedState, load_state
from sdp_reconciler.state.resolve import ResolvedSandbox, resolve_all

Fingerprint = tuple[tuple[str, int, int], ...]


class StateView:
    def __init__(self, root: Path, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.env = env
        self._lock = threading.Lock()
        self._fingerprint: Fingerprint | None = None
        self._loaded: LoadedState | None = None
        self._sandboxes: dict[str, ResolvedSandbox] = {}
        self._error: SdpError | None = None

    def _scan(self) -> Fingerprint:
        entries = []
        if self.root.is_dir():
            for path in sorted(self.root.rglob("*.y*ml")):
                if ".git" in path.parts:
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue
                entries.append((str(path), stat.st_size, stat.st_mtime_ns))
        return tuple(entries)

    def _refresh(self) -> None:
        fingerprint = self._scan()
        if fingerprint == self._fingerprint:
            return
        try:
            self._loaded = load_state(self.root, host=host_rules(self.env))
            self._sandboxes = resolve_all(self._loaded)
            self._error = None
        except SdpError as e:
            self._loaded, self._sandboxes, self._error = None, {}, e
        self._fingerprint = fingerprint

    def current(self) -> LoadedState:
        with self._lock:
            self._refresh()
            if self._loaded is None:
                assert self._error is not None
                raise self._error
            return self._loaded

    def sandboxes(self) -> dict[str, ResolvedSandbox]:
        """Every sandbox with its templates applied; empty when the state is invalid."""
        with self._lock:
            self._refresh()
            return dict(self._sandboxes)

    def problem(self) -> str | None:
        """Why the state cannot be loaded, or None."""
        with self._lock:
            self._refresh()
            return str(self._error) if self._error is not None else None
