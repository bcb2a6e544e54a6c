"""A TCP forwarder on 127.0.0.1 that counts the HTTP requests passing through it, by path.

Put in front of a real agent (nodes.yaml and the host pin name the forwarder's URL), it tells a
test which requests a reconciler sent to that node: e.g. that a scoped pass never observed
it. Bytes pass through unchanged (the agent's identity proof and bearer token work as
without it); the client-to-agent stream is scanned for HTTP/1.x request lines. Started and
stopped by the test (``with RequestCounter(port) as counter``).
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
from collections import Counter
from typing import Any

REQUEST_LINE = re.compile(
    rb"\b(GET|POST|PUT|DELETE|HEAD|PATCH) (/[^ ?\r\n]*)\S* HTTP/1\.[01]\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    counter: RequestCounter


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Any = self.server
        counter: RequestCounter = server.counter
        upstream = socket.create_connection(("127.0.0.1", counter.target_port), timeout=120)
        client: socket.socket = self.request

        def back() -> None:
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=back, daemon=True)
        thread.start()
        tail = b""
        try:
            while data := client.recv(65536):
                window = tail + data
                counter.saw(m.group(1).decode() + " " + m.group(2).decode()
                            for m in REQUEST_LINE.finditer(window)
                            if m.end() > len(tail))
                tail = window[-256:]
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
            thread.join(timeout=5)
            upstream.close()


class RequestCounter:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``; ``counts()`` by request."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.counter = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="test-request-counter", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def saw(self, requests: Any) -> None:
        with self._lock:
            self._counts.update(requests)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def __enter__(self) -> RequestCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
