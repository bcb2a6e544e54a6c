"""Server-side sessions of the status page, and the throttle of failed logins.

A session is a random token (256 bits) in an HttpOnly, SameSite=Lax cookie; the server keeps
only the token's SHA-256, the viewer's username and the expiry (an absolute lifetime, 12 h by
default). A login always creates a new token and drops the one the browser came with, so a
token planted before login is worthless; logout forgets the token. Sessions live in the
history's ``sessions`` table (``History.add_session``...): a page restart keeps everyone
signed in, and page hosts sharing a PostgreSQL history share their sessions (a viewer signed in
on one is signed in on all; a logout on one ends the session everywhere). The raw token never
reaches the database, so a copy of it signs nobody in. Nothing here ever sees a password.

``LoginThrottle`` counts failed logins per username and per client address in a sliding
window; while either count is at its limit, logins from that user or address are refused
before any check is made.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from msgspec import Struct

from sdp_reconciler.history import History

COOKIE = "sdp_session"
Clock = Callable[[], float]


class Session(Struct, frozen=True):
    username: str
    created_at: float
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, history: History, *, lifetime: float, clock: Clock = time.time) -> None:
        self.lifetime = lifetime
        self._history = history
        self._clock = clock

    def create(self, username: str, *, replacing: str | None = None) -> str:
        """A new session for ``username``; the token ``replacing`` (if any) stops working."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self._history.add_session(_digest(token), username=username, created_at=now,
                                  expires_at=now + self.lifetime,
                                  replacing=_digest(replacing) if replacing else None)
        return token

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        row = self._history.session(_digest(token))
        if row is None:
            return None
        if float(row["expires_at"]) <= self._clock():
            self._history.end_session(_digest(token))
            return None
        return Session(str(row["username"]), float(row["created_at"]), float(row["expires_at"]))

    def end(self, token: str | None) -> None:
        if token:
            self._history.end_session(_digest(token))

    def __len__(self) -> int:
        return self._history.live_sessions(self._clock())


class LoginThrottle:
    def __init__(self, *, per_user: int, per_address: int, window: float,
                 clock: Clock = time.monotonic) -> None:
        self._limits = {"user": per_user, "address": per_address}
        self.window = window
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, username: str, address: str) -> list[tuple[str, str]]:
        return [("user", username.casefold()), ("address", address)]

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this user and address may try again; 0 when they may now."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(username, address):
                failures = self._recent(key, now)
                if len(failures) >= self._limits[key[0]]:
                    wait = max(wait, failures[0] + self.window - now)
        return wait

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 10_000:  # forget users and addresses with no recent failure
                for key in list(self._failures):
                    if not self._recent(key, now):
                        del self._failures[key]
            for key in self._keys(username, address):
                self._recent(key, now).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(("user", username.casefold()), None)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures
