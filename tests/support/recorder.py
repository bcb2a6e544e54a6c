"""An HTTP listener on 127.0.0.1 that records every request it gets (tests only).

Stands where an attacker's host would: named as a node's agent, it must receive nothing
secret — no bearer token, no git username or password. It answers every request with
``status`` and ``body`` (an empty JSON object unless told otherwise).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sdp_testbed.serving import ServerThread


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path}\n{head}\n\n{self.body.decode('utf-8', 'replace')}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or "0")
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.received.append(
                Recorded(self.command, self.path, dict(self.headers.items()), body))
        payload = self.server.body
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _record

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Recorded] = []
        self.lock = threading.Lock()
        self.status = status
        self.body = body


class RequestRecorder(ServerThread[_Server]):
    thread_name = "test-recorder"

    def __init__(self, status: int = 200, body: bytes = b"{}") -> None:
        super().__init__()
        self._status = status
        self._body = body

    def _make_server(self) -> _Server:
        return _Server(self._status, self._body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._running().server_address[1]}"

    @property
    def received(self) -> list[Recorded]:
        server = self._running()
        with server.lock:
            return list(server.received)


__all__ = ["Recorded", "RequestRecorder"]
