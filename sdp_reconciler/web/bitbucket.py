"""Bitbucket push webhooks: the signature, the payload, and which branches a push moved. Pure.

Two senders, one header scheme: Bitbucket Server / Data Center (``X-Event-Key:
repo:refs_changed``) and Bitbucket Cloud (``X-Event-Key: repo:push``) both sign the raw body
with HMAC-SHA256 under the webhook's secret and send ``X-Hub-Signature: sha256=<hex>``.
``signature_ok`` is checked, in constant time, before a byte of the body is parsed;
``parse_push`` then reads only what SDP needs (the repository's names and clone links, the
branches that moved) and refuses anything else with ``PayloadError``. A Server "test
connection" (``diagnostics:ping``) and every other event are answered without a pass.

``RateLimit`` bounds the requests a listener accepts (per client address and in total) in a
sliding window, so a flood of requests costs a counter, not a pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from msgspec import Struct

SIGNATURE_HEADER = "X-Hub-Signature"
EVENT_HEADER = "X-Event-Key"
SERVER_PUSH = "repo:refs_changed"
CLOUD_PUSH = "repo:push"
SERVER_PING = "diagnostics:ping"
MAX_BODY_BYTES = 1024 * 1024
"""A push of hundreds of branches fits; anything larger is refused (413) unread."""


class PayloadError(ValueError):
    """A signed body that is not the push payload its event key says."""


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature`` value a sender computes (tests and the docs' curl use it)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the body's HMAC-SHA256 under ``secret``; constant time."""
    if not secret or header is None:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


class Push(Struct, frozen=True):
    """What a push payload says, reduced to what SDP matches on."""

    sender: str
    """``server`` or ``cloud``"""
    slug: str
    """the repository's slug (``account``)"""
    full_name: str
    """``PROJECT/slug`` (Server) or ``workspace/slug`` (Cloud)"""
    clone_urls: tuple[str, ...]
    branches: tuple[str, ...]
    """branches created or moved (not deleted), in payload order, each once"""

    def describe(self) -> str:
        return f"{self.full_name}@{','.join(self.branches) or '(no branch)'}"


def _field(data: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(data, list) or len(data) <= key:
                return None
        elif not isinstance(data, dict):
            return None
        data = data[key] if isinstance(key, int) else data.get(key)
    return data


def _text(data: Any, *path: str | int) -> str:
    value = _field(data, *path)
    return value if isinstance(value, str) else ""


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def parse_push(event: str, body: bytes) -> Push | None:
    """The push a signed body describes; None for an event that is not a push."""
    if event not in (SERVER_PUSH, CLOUD_PUSH):
        return None
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError(f"the body is not JSON: {e}") from None
    except RecursionError:  # e.g. 100,000 '[' fit in the size bound; no payload nests so
        raise PayloadError("the body nests arrays or objects too deeply to be a push") from None
    if not isinstance(data, dict):
        raise PayloadError("the body is not a JSON object")
    repository = data.get("repository")
    if not isinstance(repository, dict):
        raise PayloadError("the payload has no 'repository' object")
    if event == SERVER_PUSH:
        slug = _text(repository, "slug")
        project = _text(repository, "project", "key")
        full_name = f"{project}/{slug}" if project else slug
        links = _field(repository, "links", "clone")
        clone_urls = _unique([_text(link, "href") for link in links]
                             if isinstance(links, list) else [])
        changes = data.get("changes")
        if not isinstance(changes, list):
            raise PayloadError("a repo:refs_changed payload has a 'changes' list")
        branches = _unique([
            _text(change, "ref", "displayId") for change in changes
            if _text(change, "ref", "type") == "BRANCH" and _text(change, "type") != "DELETE"
        ])
        sender = "server"
    else:
        full_name = _text(repository, "full_name")
        slug = full_name.rpartition("/")[2] or _text(repository, "name")
        clone_urls = _unique([_text(repository, "links", "html", "href")])
        changes = _field(data, "push", "changes")
        if not isinstance(changes, list):
            raise PayloadError("a repo:push payload has a 'push.changes' list")
        branches = _unique([
            _text(change, "new", "name") for change in changes
            if _text(change, "new", "type") == "branch"
        ])
        sender = "cloud"
    if not slug:
        raise PayloadError("the payload names no repository (repository.slug / full_name)")
    return Push(sender=sender, slug=slug, full_name=full_name or slug,
                clone_urls=clone_urls, branches=branches)


class RateLimit:
    """At most ``per_client`` requests per client and ``total`` in all per ``window`` s."""

    def __init__(self, *, per_client: int = 30, total: int = 120, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client, self.total, self.window = per_client, total, window
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self._clock()
        with self._lock:
            cutoff = now - self.window
            while self._all and self._all[0] <= cutoff:
                self._all.popleft()
            mine = self._seen.setdefault(client, deque())
            while mine and mine[0] <= cutoff:
                mine.popleft()
            for key in [k for k, v in self._seen.items() if not v and k != client]:
                del self._seen[key]  # forget quiet clients: the table stays small
            if len(mine) >= self.per_client or len(self._all) >= self.total:
                return False
            mine.append(now)
            self._all.append(now)
            return True


__all__ = [
    "CLOUD_PUSH", "EVENT_HEADER", "MAX_BODY_BYTES", "SERVER_PING", "SERVER_PUSH",
    "SIGNATURE_HEADER", "PayloadError", "Push", "RateLimit", "parse_push", "sign",
    "signature_ok",
]
