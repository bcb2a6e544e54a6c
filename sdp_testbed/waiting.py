"""Waiting for a condition with a deadline, and a plain HTTP GET that never raises for a status.

Tests, the demo and benchmarks synchronise with what they started (a server, a container)
by polling a condition until a deadline, never by sleeping a guessed time. `wait_for` raises
`TimeoutError` naming what it waited for and the last thing it saw.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from msgspec import Struct, field

__all__ = ["HttpAnswer", "http_get", "wait_for", "wait_for_http"]

T = TypeVar("T")


class HttpAnswer(Struct, frozen=True):
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(
    url: str, *, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> HttpAnswer:
    """GET `url`; any HTTP status is an answer, only a failed connection raises (OSError)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return HttpAnswer(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return HttpAnswer(error.code, error.read(), dict(error.headers))


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 20.0,
    interval: float = 0.05,
) -> T:
    """Call `probe` until it returns a value other than None or False; an OSError counts as
    "not yet". (False is "not yet" too: ``wait_for(lambda: count() >= 3)`` once returned at
    once, its False taken for an answer, and a test went on without the samples it waited
    for.)"""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
        except OSError as error:
            result, last = None, error
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what} (last: {last})")
        time.sleep(interval)


def wait_for_http(
    url: str, *, status: int = 200, timeout: float = 20.0, what: str | None = None
) -> HttpAnswer:
    """Poll `url` until it answers with `status`; return that answer."""
    seen: list[HttpAnswer] = []

    def probe() -> HttpAnswer | None:
        answer = http_get(url, timeout=2.0)
        seen[:] = [answer]
        return answer if answer.status == status else None

    try:
        return wait_for(probe, what=what or f"HTTP {status} from {url}", timeout=timeout)
    except TimeoutError as error:
        if seen:
            raise TimeoutError(
                f"{error}; last answer {seen[0].status}: {seen[0].text[:200]}"
            ) from None
        raise
