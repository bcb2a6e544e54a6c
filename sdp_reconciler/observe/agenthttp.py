"""HTTP/1.1 to one agent, on the standard library: the transport under ``node_client``.

The reconciler talks to its own agents only: JSON over HTTP/1.1, no proxy, no cookie, no
redirect, no compression. httpx brought all of those, and its import and the set-up of one
client per node were ~35 ms of every ``sdp-reconcile once`` (issue 15). Promises:

* keep-alive: an idle connection is reused by one caller at a time, never shared; one the
  agent closed while it was idle is noticed before reuse (it polls readable) and replaced,
  and an idempotent request that loses the race with that close is sent once more, on a new
  connection (never a POST: an apply is sent once);
* every wait is bounded: connecting, sending and each read honour the timeout given, and
  ``cap``, when set, bounds every one of them (the page's survey);
* nothing of the environment is consulted, neither proxy variables nor ``.netrc``: the bearer
  token goes to the pinned URL and nowhere else;
* https checks the agent's certificate and name against the system's CA store (OpenSSL's
  defaults, so ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` apply);
* a failure is ``HttpFailure`` with a plain reason ("connection refused", "timed out"); it
  never carries the request, so never its headers.
"""

from __future__ import annotations

import functools
import http.client
import json
import select
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

from msgspec import Struct

MAX_IDLE = 4
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
USER_AGENT = "sdp-reconcile"


class HttpFailure(Exception):
    """The request got no HTTP answer; ``reason`` says why in a few words."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


class Answer(Struct, frozen=True):
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Stream:
    """An answer read as it arrives (server-sent events)."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self._response = response
        self.status = response.status

    def body(self) -> bytes:
        try:
            return self._response.read()
        except (OSError, http.client.HTTPException) as e:
            raise failure(e) from e

    def lines(self) -> Iterator[str]:
        """Each line without its end (``\\n`` or ``\\r\\n``), until the answer ends."""
        while True:
            try:
                line = self._response.readline()
            except (OSError, http.client.HTTPException) as e:
                raise failure(e) from e
            if not line:
                return
            yield line.decode("utf-8", "replace").rstrip("\r\n")


class AgentHttp:
    def __init__(self, url: str, *, timeout: float, cap: float | None = None) -> None:
        """A client of the agent at ``url`` (http or https). ``timeout`` is the default of
        every request; ``cap`` bounds every wait, whatever a request asks."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._cap = cap
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: Mapping[str, str], timeout: float | None = None) -> Answer:
        """Send one request and read its whole answer; HttpFailure when there is none."""
        for fresh in (False, True):
            connection, reused = self._connection(self._bound(timeout), fresh=fresh)
            try:
                return self._exchange(connection, method, self._prefix + path, body, headers)
            except STALE as e:
                if fresh or not (reused and method in IDEMPOTENT):
                    raise failure(e) from e
        raise AssertionError("unreachable: the fresh attempt returns or raises")

    def _exchange(self, connection: http.client.HTTPConnection, method: str, target: str,
                  body: bytes | None, headers: Mapping[str, str]) -> Answer:
        """One request on ``connection``; a stale-connection error is left to the caller."""
        try:
            connection.request(method, target, body=body, headers=self._headers(headers))
            response = connection.getresponse()
            data = response.read()
        except STALE:
            connection.close()
            raise
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            raise failure(e) from e
        self._release(connection, response)
        return Answer(response.status, data)

    @contextmanager
    def stream(self, path: str, *, headers: Mapping[str, str], connect_timeout: float,
               read_timeout: float | None,
               query: Mapping[str, str] | None = None) -> Iterator[Stream]:
        """A GET whose answer is read as it comes; each read waits at most ``read_timeout``
        (None: as long as it takes, unless capped). Its connection is never reused."""
        connection, _ = self._connection(self._bound(connect_timeout))
        try:
            connection.request("GET", self._target(path, query), headers=self._headers(headers))
            assert connection.sock is not None
            connection.sock.settimeout(self._bound(read_timeout))
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            raise failure(e) from e
        try:
            yield Stream(response)
        finally:
            connection.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _bound(self, seconds: float | None) -> float | None:
        if seconds is None:
            seconds = self._timeout
        return seconds if self._cap is None else min(seconds, self._cap)

    def _target(self, path: str, query: Mapping[str, str] | None) -> str:
        return self._prefix + path + (f"?{urlencode(query)}" if query else "")

    @staticmethod
    def _headers(headers: Mapping[str, str]) -> dict[str, str]:
        return {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}

    def _connection(self, timeout: float | None, *,
                    fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection when there is one still open (and ``fresh`` is not asked), else
        a new one; and whether it was reused."""
        with self._lock:
            while self._idle and not fresh:
                connection = self._idle.pop()
                if _still_open(connection):
                    assert connection.sock is not None
                    connection.sock.settimeout(timeout)
                    return connection, True
                connection.close()
        if self._tls:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=_verifying_context()), False
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout), False

    def _release(self, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        with self._lock:
            if not response.will_close and not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle connection has nothing to read; readable means the agent closed it."""
    if connection.sock is None:
        return False
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return not poller.poll(0)


@functools.cache
def _verifying_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # built once per process: loading the CAs costs


def failure(error: BaseException) -> HttpFailure:
    """The reason, in a few words, that a request got no answer."""
    if isinstance(error, TimeoutError):
        return HttpFailure("timed out", timed_out=True)
    if isinstance(error, ConnectionRefusedError):
        return HttpFailure("connection refused")
    if isinstance(error, ssl.SSLCertVerificationError):
        return HttpFailure(f"its certificate is not trusted ({error.verify_message})")
    if isinstance(error, ssl.SSLError):
        return HttpFailure(f"TLS failed ({error.reason or type(error).__name__})")
    if isinstance(error, socket.gaierror):
        return HttpFailure("its host name does not resolve")
    if isinstance(error, http.client.RemoteDisconnected):
        return HttpFailure("it closed the connection without answering")
    if isinstance(error, http.client.HTTPException):
        return HttpFailure(f"its answer is not HTTP ({type(error).__name__})")
    if isinstance(error, OSError) and error.strerror:
        return HttpFailure(error.strerror[0].lower() + error.strerror[1:])
    return HttpFailure(type(error).__name__)


__all__ = ["AgentHttp", "Answer", "HttpFailure", "Stream", "failure"]
