"""The reconciler's HTTP/1.1 client of an agent (sdp_reconciler/observe/agenthttp.py).

Against real sockets on 127.0.0.1: a small HTTP/1.1 server in this file whose every
connection and request is recorded, and which can be told to close an idle connection, to
drop a request without answering, or to say nothing at all.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sdp_reconciler.observe import agenthttp
from sdp_reconciler.observe.agenthttp import AgentHttp, HttpFailure
from tests.support.smtp import self_signed

Behaviour = Callable[["Request"], bytes | None]  # None: close without answering


@dataclass
class Request:
    connection: int  # which connection (1, 2, ...) it came on
    index: int  # its place on that connection (1, 2, ...)
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def answer(body: bytes = b'{"ok": true}') -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Server:
    behaviour: Behaviour
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    sockets: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    sock.close()
                    continue
            self.sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock, self.connections),
                             daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        reader = sock.makefile("rb")
        index = 0
        while True:
            try:
                line = reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (header := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
            except (OSError, ValueError):
                return
            index += 1
            request = Request(number, index, method, target, headers, body)
            self.requests.append(request)
            reply = self.behaviour(request)
            try:
                if reply is None:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                    return
                sock.sendall(reply)
            except OSError:
                return


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(behaviour: Behaviour = lambda _r: answer(), **kwargs: object) -> Server:
        server = Server(behaviour, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_requests_share_one_kept_alive_connection(serve: Callable[..., Server]) -> None:
    server = serve()
    client = AgentHttp(server.url + "/v1", timeout=5)
    first = client.request("GET", "/info", headers={"Authorization": "Bearer t"})
    second = client.request("POST", "/lease", body=b"{}", headers={})
    assert (first.status, first.json(), second.status) == (200, {"ok": True}, 200)
    assert [(r.connection, r.index, r.method, r.target) for r in server.requests] == [
        (1, 1, "GET", "/v1/info"), (1, 2, "POST", "/v1/lease")]
    assert server.requests[0].headers["authorization"] == "Bearer t"
    assert server.requests[1].body == b"{}"
    client.close()


def test_an_idle_connection_the_agent_closed_is_replaced(serve: Callable[..., Server]) -> None:
    server = serve()
    client = AgentHttp(server.url, timeout=5)
    client.request("GET", "/a", headers={})
    for sock in server.sockets:  # the agent's keep-alive timeout: it closes the idle one
        sock.shutdown(socket.SHUT_RDWR)
    assert client.request("POST", "/b", body=b"x", headers={}).status == 200
    assert [(r.connection, r.target) for r in server.requests] == [(1, "/a"), (2, "/b")]


def test_an_idempotent_request_that_loses_the_race_is_sent_again(
        serve: Callable[..., Server]) -> None:
    # The agent takes the second request of a connection and closes without answering, as
    # one closing an idle connection at the moment a request arrives does.
    server = serve(lambda r: None if r.index == 2 else answer())
    client = AgentHttp(server.url, timeout=5)
    client.request("GET", "/a", headers={})
    assert client.request("GET", "/b", headers={}).status == 200
    assert [(r.connection, r.index, r.target) for r in server.requests] == [
        (1, 1, "/a"), (1, 2, "/b"), (2, 1, "/b")]


def test_a_post_is_never_sent_twice(serve: Callable[..., Server]) -> None:
    server = serve(lambda r: None if r.index == 2 else answer())
    client = AgentHttp(server.url, timeout=5)
    client.request("GET", "/a", headers={})
    with pytest.raises(HttpFailure) as failed:
        client.request("POST", "/apply", body=b"{}", headers={})
    assert failed.value.reason == "it closed the connection without answering"
    assert [r.target for r in server.requests] == ["/a", "/apply"]


def test_a_silent_agent_times_out_within_the_cap(serve: Callable[..., Server]) -> None:
    answered = threading.Event()

    def silent(_request: Request) -> bytes:
        answered.wait(30)
        return answer()

    server = serve(silent)
    client = AgentHttp(server.url, timeout=30, cap=0.2)
    try:
        with pytest.raises(HttpFailure) as failed:
            client.request("GET", "/observe", headers={}, timeout=60)
        assert (failed.value.reason, failed.value.timed_out) == ("timed out", True)
        with pytest.raises(HttpFailure) as streamed, \
                client.stream("/events", headers={}, connect_timeout=10,
                              read_timeout=None) as stream:
            list(stream.lines())
        assert streamed.value.timed_out
    finally:
        answered.set()


def test_a_refused_connection_says_so() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    client = AgentHttp(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(HttpFailure) as failed:
        client.request("GET", "/info", headers={"Authorization": "Bearer canary-token-77"})
    assert (failed.value.reason, failed.value.timed_out) == ("connection refused", False)
    assert "canary-token-77" not in repr(failed.value) + str(failed.value)


def test_proxy_variables_are_never_consulted(serve: Callable[..., Server],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve()
    agent = serve()
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = AgentHttp(agent.url, timeout=5)
    client.request("GET", "/info", headers={"Authorization": "Bearer canary-token-78"})
    assert proxy.requests == [] and proxy.connections == 0
    assert len(agent.requests) == 1


def test_a_stream_reads_lines_as_they_come_and_its_query(serve: Callable[..., Server]) -> None:
    events = b"id: 1\r\ndata: {\"a\": 1}\r\n\r\nid: 2\ndata: {\"b\": 2}\n\n"

    def chunked(_request: Request) -> bytes:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" \
               b"Transfer-Encoding: chunked\r\n\r\n"
        return head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)

    server = serve(chunked)
    client = AgentHttp(server.url, timeout=5)
    with client.stream("/logs", headers={}, connect_timeout=5, read_timeout=5,
                       query={"tail": "10", "follow": "true"}) as stream:
        assert stream.status == 200
        assert list(stream.lines()) == ["id: 1", 'data: {"a": 1}', "", "id: 2",
                                        'data: {"b": 2}', ""]
    assert server.requests[0].target == "/logs?tail=10&follow=true"


def test_https_checks_the_certificate_against_the_system_store(
        serve: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = serve(tls=tls)
    agenthttp._verifying_context.cache_clear()
    try:
        with pytest.raises(HttpFailure) as failed:
            AgentHttp(server.url, timeout=5).request(
                "GET", "/info", headers={"Authorization": "Bearer canary-token-79"})
        assert failed.value.reason.startswith("its certificate is not trusted")
        assert all(r.target != "/info" for r in server.requests)  # nothing was sent
        agenthttp._verifying_context.cache_clear()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator trusts this CA
        assert AgentHttp(server.url, timeout=5).request("GET", "/info", headers={}).status == 200
    finally:
        agenthttp._verifying_context.cache_clear()


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        AgentHttp("ftp://127.0.0.1/", timeout=1)
