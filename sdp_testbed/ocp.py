"""A stand-in for a service running on OCP: a tiny threaded HTTP server on this machine.

`OcpStandIn(name)` answers every GET with JSON `{"backend": "ocp", "service": name,
"path": <request path and query>}`, so a test can tell an answer that went to "OCP" from
one that went to a sandbox. One stand-in may sit behind several gateway keys: it answers with
the name it was given. It listens on 0.0.0.0 (containers reach it through
`host.docker.internal`, the Docker bridge, still this machine) on a free port; use
`url_for_containers` in routes and `url_for_host` from the test itself. `requests` lists the
paths it answered, in order.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sdp_testbed.serving import ServerThread

__all__ = ["OcpStandIn"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, name: str) -> None:
        super().__init__(address, _Handler)
        self.name = name
        self.answered: list[str] = []
        self.answered_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        with self.server.answered_lock:
            self.server.answered.append(self.path)
        body = json.dumps({"backend": "ocp", "service": self.server.name, "path": self.path})
        payload = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


class OcpStandIn(ServerThread[_Server]):
    """Answers for OCP service `name` on 0.0.0.0:<free port> until stopped."""

    def __init__(self, name: str, *, host: str = "0.0.0.0", port: int = 0) -> None:
        super().__init__()
        self._name = name
        self._address = (host, port)
        self.thread_name = f"sdp-testbed-ocp:{name}"

    def _make_server(self) -> _Server:
        return _Server(self._address, name=self._name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def port(self) -> int:
        return int(self._running().server_address[1])

    @property
    def url_for_containers(self) -> str:
        return f"http://host.docker.internal:{self.port}"

    @property
    def url_for_host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[str]:
        server = self._running()
        with server.answered_lock:
            return list(server.answered)

