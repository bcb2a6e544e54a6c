"""A load loop through a sandbox's gateway, in a thread: one GET every ``interval`` seconds,
counting failed requests and which revision of the service (and of the gateway) answered.

A request fails when it gets no answer, an HTTP status other than 200 from the gateway, or an
upstream status other than 200 (the gateway answers 502 with ``upstream_status`` when the
service it routes to cannot be reached). Used by the zero-drop tests and by ``bench/``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

from msgspec import Struct, field


class Answer(Struct):
    at: float
    ok: bool
    status: int | None
    revision: str | None
    gateway_revision: str | None
    problem: str = ""


class LoadLoop(Struct):
    url: str
    interval: float = 0.025
    timeout: float = 5.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoadLoop:
        self._thread = threading.Thread(target=self._run, name="load-loop", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.answers.append(self.once())
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def once(self) -> Answer:
        at = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as got:  # noqa: S310
                status, body = got.status, got.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            return Answer(at, False, e.code, None, None, f"HTTP {e.code}: {detail}")
        except (urllib.error.URLError, OSError) as e:
            return Answer(at, False, None, None, None, str(getattr(e, "reason", e)))
        try:
            data = json.loads(body)
        except ValueError:
            return Answer(at, False, status, None, None, "not JSON: " + body[:80].decode(
                "utf-8", "replace"))
        upstream = data.get("upstream_status")
        inner = data.get("body") if isinstance(data.get("body"), dict) else {}
        ok = status == 200 and upstream == 200
        return Answer(at, ok, status, inner.get("revision"), data.get("gateway_revision"),
                      "" if ok else f"upstream {data.get('upstream')} answered {upstream}")

    # -- reading ----------------------------------------------------------------------------------

    def mark(self) -> int:
        return len(self.answers)

    def since(self, mark: int) -> list[Answer]:
        return self.answers[mark:]

    def failures(self, mark: int = 0) -> list[Answer]:
        return [a for a in self.since(mark) if not a.ok]

    def revisions(self, mark: int = 0) -> Counter[str | None]:
        return Counter(a.revision for a in self.since(mark) if a.ok)

    def gateway_revisions(self, mark: int = 0) -> Counter[str | None]:
        return Counter(a.gateway_revision for a in self.since(mark) if a.ok)

    def longest_gap(self, mark: int = 0) -> float:
        """The longest time between two successful answers (the outage a user would see)."""
        times = [a.at for a in self.since(mark) if a.ok]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def wait_for_answers(self, count: int, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.answers)
        while len(self.answers) < start + count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load loop got no {count} answers in {timeout}s")
            time.sleep(self.interval)
