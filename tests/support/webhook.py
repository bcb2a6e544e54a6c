"""A webhook receiver on 127.0.0.1 that records every JSON body posted to it (tests only)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sdp_testbed.serving import ServerThread


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with self.server.lock:
            self.server.received.append((self.path, json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.status = status


class WebhookReceiver(ServerThread[_Server]):
    thread_name = "test-webhook"

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self._status = status

    def _make_server(self) -> _Server:
        return _Server(self._status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._running().server_address[1]}/hooks/sdp"

    @property
    def received(self) -> list[tuple[str, Any]]:
        server = self._running()
        with server.lock:
            return list(server.received)
