"""A socketserver run in a daemon thread, started and stopped by its owner.

The git server, the OCP stand-ins and the tests' webhook receiver all need the same life
cycle: make the server (port 0 picks a free one), serve in a thread, and on stop shut it down,
close the socket and join the thread. Subclasses say how to make the server.
"""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Generic, Self, TypeVar

S = TypeVar("S", bound=socketserver.BaseServer)


class ServerThread(Generic[S]):
    thread_name = "sdp-testbed-server"

    def __init__(self) -> None:
        self._server: S | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> S:
        raise NotImplementedError

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.thread_name} is already started")
        server = self._make_server()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=self.thread_name, daemon=True)
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def _running(self) -> S:
        if self._server is None:
            raise RuntimeError(f"{self.thread_name} is not started")
        return self._server

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
