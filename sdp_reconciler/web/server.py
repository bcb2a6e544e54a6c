"""Running the page: in the foreground (``sdp-reconcile serve``) or in a thread (``watch``).

``serve_forever(app, listen)`` runs uvicorn until SIGINT/SIGTERM. ``WebServer`` runs the same
app in a daemon thread for ``watch``: ``start()`` returns once the socket listens (or raises
``SdpError`` naming the address), ``stop()`` ends the open event streams and the server.
``cmd_serve`` is the ``serve`` sub-command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import threading
import time

import uvicorn
from starlette.applications import Starlette

from sdp_node.numbers import port_number
from sdp_reconciler.errors import SdpError
from sdp_reconciler.web.settings import DEFAULT_LISTEN

log = logging.getLogger("sdp_reconciler.web")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    number = port_number(port)
    if not sep or not host or number is None:
        raise SdpError(f"listen address {listen!r} must look like 127.0.0.1:3452")
    return host.strip("[]"), number


def _config(app: Starlette, listen: str) -> uvicorn.Config:
    host, port = parse_listen(listen)
    trusted: list[str] = list(getattr(app.state, "trusted_proxies", []))
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=3, lifespan="on",
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: only from named proxies.
        proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
    )


def serve_forever(app: Starlette, listen: str = DEFAULT_LISTEN) -> None:
    config = _config(app, listen)
    print(f"status page on http://{listen}/", flush=True)
    uvicorn.Server(config).run()


class WebServer:
    """The page in a background thread; what ``watch`` uses."""

    def __init__(self, app: Starlette, listen: str = DEFAULT_LISTEN) -> None:
        self.app = app
        self.listen = listen
        self._server = uvicorn.Server(_config(app, listen))
        self._thread = threading.Thread(target=self._run, name="sdp-page", daemon=True)
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._server.serve()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by start()
            self._error = e

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SdpError(f"the status page could not listen on {self.listen}"
                               + (f": {self._error}" if self._error else ""))
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        # End the event streams first: uvicorn would otherwise wait for them to close.
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            closing = asyncio.run_coroutine_threadsafe(self.app.state.context.hub.close(), loop)
            with contextlib.suppress(Exception):
                closing.result(timeout)
        self._server.should_exit = True
        self._thread.join(timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    from sdp_reconciler.paths import history_path, state_dir
    from sdp_reconciler.web.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    listen = getattr(args, "listen", None) or os.environ.get("SDP_LISTEN") or DEFAULT_LISTEN
    parse_listen(listen)
    app = create_app(state_dir=state_dir(args), history_path=history_path(args))
    problem = app.state.context.state.problem()
    if problem:
        log.warning("the state directory has problems; the page shows them:\n%s", problem)
    serve_forever(app, listen)
    return 0
