"""The node's lease: the lock reconcilers take before applying, with a time limit.

One lease at a time per node. A reconciler acquires it (or finds it held by another holder and
is refused with who holds it and until when), renews it while it works, and releases it. A
lease nobody renews expires, so a reconciler killed mid-apply never blocks the next one for
longer than its time limit. Kept in memory: an agent restart frees it.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

from sdp_node.errors import Conflict, NotFound
from sdp_node.protocol import Lease


class LeaseKeeper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._deadline = 0.0

    def _current(self) -> Lease | None:
        if self._lease is not None and time.monotonic() >= self._deadline:
            self._lease = None
        return self._lease

    def acquire(self, holder: str, ttl: float) -> Lease:
        with self._lock:
            current = self._current()
            if current is not None and current.holder != holder:
                remaining = self._deadline - time.monotonic()
                raise Conflict(
                    f"the lease is held by {current.holder!r} for {remaining:.0f}s more: another "
                    "reconciler is applying; retry after it finishes"
                )
            lease_id = current.id if current is not None else secrets.token_hex(16)
            return self._set(lease_id, holder, ttl)

    def renew(self, lease_id: str, ttl: float) -> Lease:
        with self._lock:
            current = self._current()
            if current is None or current.id != lease_id:
                raise NotFound("this lease expired or was never granted: acquire a new one")
            return self._set(lease_id, current.holder, ttl)

    def release(self, lease_id: str) -> None:
        with self._lock:
            current = self._current()
            if current is not None and current.id == lease_id:
                self._lease = None

    def check(self, lease_id: str) -> None:
        with self._lock:
            current = self._current()
            if current is None or current.id != lease_id:
                holder = f" (held by {current.holder!r})" if current else ""
                raise Conflict(
                    f"apply needs the node's lease; the given one is not current{holder}"
                )

    def peek(self) -> Lease | None:
        with self._lock:
            return self._current()

    def _set(self, lease_id: str, holder: str, ttl: float) -> Lease:
        self._deadline = time.monotonic() + ttl
        self._lease = Lease(
            id=lease_id, holder=holder, expires_at=datetime.now(UTC) + timedelta(seconds=ttl)
        )
        return self._lease
