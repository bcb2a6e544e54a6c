"""A git server over HTTP with Basic auth, serving the bare repositories under one directory.

`GitServer` stands in for Bitbucket on this machine: dulwich's smart-HTTP WSGI application
behind a Basic-auth middleware, on a threaded `wsgiref` server bound to 127.0.0.1 (port 0
picks a free one). Repository `name` lives at `root / f"{name}.git"` and is served at
`repo_url(name)`.

Promises: every request without the right credentials gets 401 with
`WWW-Authenticate: Basic realm="sdp-testbed"`; credentials are compared in constant time;
request logging is quiet (debug level, request line only: never a header, so never the
Authorization header). Credentials may hold any characters (the password may contain ':');
the header is decoded as UTF-8 only, as Bitbucket does and as Apache in front of
git-http-backend compares it (against an htpasswd made in a UTF-8 terminal), and as git and
curl send it: a client that encodes ``é`` as latin-1 is refused, as it would be there.

`python -m sdp_testbed.gitserver --root DIR [--host H] [--port N] [--pid-file F]` serves
until SIGTERM/SIGINT for the demo, reading the credentials from the environment variables
SDP_TESTBED_GIT_USERNAME and SDP_TESTBED_GIT_PASSWORD (never from argv, where `ps` shows
them), and prints one line `listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import logging
import os
import signal
import socketserver
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from dulwich.server import FileSystemBackend
from dulwich.web import make_wsgi_chain

from sdp_testbed.serving import ServerThread

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["REALM", "BasicAuthMiddleware", "GitServer", "main"]

REALM = "sdp-testbed"
USERNAME_ENV = "SDP_TESTBED_GIT_USERNAME"
PASSWORD_ENV = "SDP_TESTBED_GIT_PASSWORD"  # noqa: S105 (a variable name, not a secret)

_log = logging.getLogger(__name__)


class _RootRelativeBackend(FileSystemBackend):
    """dulwich's file-system backend, joining request paths below its root.

    dulwich's web layer asks for "/name.git"; the stock backend joins that absolute path
    onto its root, gets "/name.git", finds it outside the root and answers 404.
    """

    def open_repository(self, path: str | bytes) -> Any:
        # The smart-protocol handlers pass bytes, the info/refs handler str.
        relative = os.fsdecode(path).lstrip("/")
        return super().open_repository(relative)


class BasicAuthMiddleware:
    """Lets a request through to `app` only with the configured Basic credentials.

    With `list_only_password`, that password (of the same username) is let through to the ref
    advertisement (``GET .../info/refs``, what ls-remote asks) and refused for everything else
    (the pack a fetch asks for): a remote that answers a branch check and then refuses the
    fetch, as one whose password changed in between would.
    """

    def __init__(self, app: WSGIApplication, *, username: str, password: str,
                 list_only_password: str | None = None) -> None:
        if ":" in username:
            raise ValueError("a Basic-auth username cannot contain ':'")
        self._app = app
        self._expected = f"{username}:{password}".encode()
        self._listing = (None if list_only_password is None
                         else f"{username}:{list_only_password}".encode())

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        listing = environ.get("REQUEST_METHOD") == "GET" \
            and environ.get("PATH_INFO", "").endswith("/info/refs")
        if self._authorized(header, self._expected) or (
                listing and self._listing is not None and self._authorized(header, self._listing)):
            return self._app(environ, start_response)
        body = b"authentication required\n"
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", f'Basic realm="{REALM}"'),
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    @staticmethod
    def _authorized(header: str, expected: bytes) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            offered = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(offered, expected)


class _QuietRequestHandler(WSGIRequestHandler):
    """Logs the request line at debug level; headers are never logged."""

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class GitServer(ServerThread[_ThreadingWSGIServer]):
    """Serves the bare repositories under `root` over smart HTTP with Basic auth."""

    def __init__(
        self,
        root: Path,
        *,
        username: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        list_only_password: str | None = None,
    ) -> None:
        """``list_only_password``: see ``BasicAuthMiddleware`` (tests of a refused fetch)."""
        super().__init__()
        self.thread_name = "sdp-testbed-git"
        self._root = Path(root).resolve()
        self._host = host
        self._requested_port = port
        git_app = make_wsgi_chain(_RootRelativeBackend(str(self._root)))
        self._app = BasicAuthMiddleware(git_app, username=username, password=password,
                                        list_only_password=list_only_password)

    @property
    def root(self) -> Path:
        return self._root

    @property
    def port(self) -> int:
        return int(self._running().server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def repo_url(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def repo_path(self, name: str) -> Path:
        return self._root / f"{name}.git"

    def _make_server(self) -> _ThreadingWSGIServer:
        server = make_server(self._host, self._requested_port, self._app,
                             server_class=_ThreadingWSGIServer,
                             handler_class=_QuietRequestHandler)
        self.thread_name = f"sdp-testbed-git:{server.server_address[1]}"
        return server


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sdp_testbed.gitserver",
        description=(
            "Serve the bare repositories under --root over HTTP with Basic auth. "
            f"Credentials come from ${USERNAME_ENV} and ${PASSWORD_ENV}."
        ),
    )
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pid-file", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    username = os.environ.get(USERNAME_ENV)
    password = os.environ.get(PASSWORD_ENV)
    if not username or password is None:
        print(f"error: set {USERNAME_ENV} and {PASSWORD_ENV}", file=sys.stderr)
        return 2
    if not args.root.is_dir():
        print(f"error: --root {args.root} is not a directory", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = GitServer(
        args.root, username=username, password=password, host=args.host, port=args.port
    )
    server.start()
    try:
        if args.pid_file is not None:
            args.pid_file.write_text(f"{os.getpid()}\n")
        print(f"listening on {server.base_url}", flush=True)
        stopping.wait()
    finally:
        server.stop()
        if args.pid_file is not None:
            args.pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
