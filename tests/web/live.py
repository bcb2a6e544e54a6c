"""The page on a real uvicorn server in a thread, and a small Server-Sent Events reader.

SSE needs a real server: ``httpx.ASGITransport`` buffers whole responses. ``LivePage`` runs
``create_app`` through ``WebServer`` (what ``watch`` uses) on a free port over a history file
that the test writes with the reconciler's own ``History`` writer, and signs in with a login
check of its own (logins are tested against the real agent elsewhere).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sdp_reconciler.history import History
from sdp_reconciler.web import WebServer, WebSettings, create_app
from tests.support.agents import free_port


@dataclass
class Sse:
    event: str = "message"
    id: str | None = None
    data: str = ""
    comment: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def parse(lines: Iterator[str]) -> Iterator[Sse]:
    """SSE events (and comment lines, as events with only ``comment``) from response lines."""
    current: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if current or data:
                yield Sse(event=current.get("event", "message"), id=current.get("id"),
                          data="\n".join(data))
            current, data = {}, []
            continue
        if line.startswith(":"):
            yield Sse(comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("event", "id"):
            current[name] = value


@dataclass
class LivePage:
    url: str
    history: History
    server: WebServer
    cookies: dict[str, str] = field(default_factory=dict)

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, cookies=self.cookies, **options)

    def health(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/healthz", timeout=5)
        result: dict[str, Any] = answer.json()
        return result

    def wait_open_streams(self, count: int, *, timeout: float = 60) -> float:
        """Seconds until /healthz reports ``count`` open streams; fails after ``timeout``."""
        started = time.monotonic()
        while True:
            open_streams = self.health()["open_streams"]
            if open_streams == count:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{open_streams} streams still open after {timeout} s "
                                     f"(waiting for {count})")
            time.sleep(0.02)

    def log(self, message: str, *, sandbox: str = "S1", **values: Any) -> int:
        return self.history.add_event(sandbox=sandbox, kind=values.pop("kind", "log"),
                                      message=message, **values)


def start_live_page(root: Path, settings: WebSettings, *, history: str | None = None,
                    env: dict[str, str] | None = None, sign_in: bool = True) -> LivePage:
    """A page over ``history`` (default: ``root/history.sqlite``); ``env`` holds what opening
    it needs (a PostgreSQL password)."""
    location: Path | str = history or root / "history.sqlite"
    writer = History(location, env=env or {})
    app = create_app(state_dir=root / "state", history_path=location, env=env or {},
                     settings=settings, login=lambda username, password: None)
    server = WebServer(app, f"127.0.0.1:{free_port()}")
    server.start()
    page = LivePage(url=f"http://{server.listen}", history=writer, server=server)
    if sign_in:
        answer = httpx.post(f"{page.url}/login", data={"username": "viewer", "password": "pw"},
                            timeout=10)
        assert answer.status_code == 303, answer.text
        page.cookies = dict(answer.cookies)
    return page
