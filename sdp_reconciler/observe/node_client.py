"""The reconciler's client of one ``sdp-node`` agent (HTTP+JSON, SSE).

Thin: one method per endpoint of ``sdp_node.protocol``, over ``agenthttp`` (HTTP/1.1 on the
standard library). A request that gets no answer is ``NodeUnreachable``; an agent's JSON error
becomes ``AgentError`` carrying the agent's message.
``follow`` streams an operation's events and, when the connection drops, reconnects with
``Last-Event-ID`` so no event is lost or repeated.

Identity first: before its first request that carries the bearer token (and so before any git
credential), the client asks the agent to prove, over a fresh nonce, that it holds that token
and is the expected node of the expected installation (``protocol.identity_proof``). Until it
has, nothing secret is sent; a wrong or missing proof is ``AgentIdentityError``.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from sdp_node.metricswire import MetricsResponse
from sdp_node.protocol import (
    API_PREFIX,
    ApplyRequest,
    ApplyResponse,
    BranchesRequest,
    BranchesResponse,
    CommittedRoutesRequest,
    CommittedRoutesResponse,
    ContainerStats,
    Credentials,
    IdentityProof,
    IdentityRequest,
    Lease,
    LeaseRequest,
    NodeInfo,
    Observation,
    OperationEvent,
    OperationSummary,
    RepositoryInfo,
    Step,
    identity_proof,
)
from sdp_reconciler.errors import AgentError, AgentIdentityError, NodeUnreachable
from sdp_reconciler.observe.agenthttp import AgentHttp, Answer, HttpFailure

M = TypeVar("M", bound=BaseModel)
RECONNECT_ATTEMPTS = 20
STREAM_CONNECT_TIMEOUT = 10.0


class NodeClient:
    def __init__(
        self, name: str, url: str, token: str, *, installation: str | None,
        timeout: float = 30.0, cap: float | None = None,
    ) -> None:
        """A client of node ``name``'s agent at ``url``. The agent must prove it is that node
        of ``installation`` before the token is sent; ``installation=None`` (tests that talk
        to an agent they started) skips the check. ``cap`` bounds every wait of every
        request (the page's survey), whatever the request's own timeout."""
        self.name = name
        self.url = url.rstrip("/")
        self._token = token
        self._installation = installation
        self._proven = installation is None
        self._http = AgentHttp(self.url + API_PREFIX, timeout=timeout, cap=cap)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def identify(self) -> NodeInfo:
        """Ask the agent to prove who it is; nothing secret is sent. AgentIdentityError when
        the proof is wrong or the agent is another node or installation."""
        nonce = secrets.token_hex(32)
        try:
            response = self._send(
                "POST", "/identify", content=IdentityRequest(nonce=nonce).model_dump_json()
                .encode(), headers={"Content-Type": "application/json"}, timeout=None)
        except AgentError as e:
            raise AgentIdentityError(
                f"the agent at {self.url} does not answer the identity check of node "
                f"{self.name} (HTTP {e.status}; an agent older than this reconciler? upgrade "
                "it): nothing secret was sent to it") from None
        try:
            answer = IdentityProof.model_validate_json(response.body)
        except ValueError:
            raise AgentIdentityError(
                f"the agent at {self.url} did not answer the identity check of node "
                f"{self.name}: nothing was sent to it") from None
        expected = identity_proof(self._token, nonce, answer.node)
        if not hmac.compare_digest(expected, answer.proof):
            raise AgentIdentityError(
                f"the agent at {self.url} could not prove it holds node {self.name}'s token "
                "(its proof does not match the token pinned on this host): no token or "
                "credential was sent to it")
        if answer.node.name != self.name or (
                self._installation is not None and answer.node.installation != self._installation):
            raise AgentIdentityError(
                f"the agent at {self.url} is node {answer.node.name!r} of installation "
                f"{answer.node.installation!r}, not node {self.name!r} of installation "
                f"{self._installation!r}: nothing secret was sent to it")
        self._proven = True
        return answer.node

    def _authorization(self) -> dict[str, str]:
        if not self._proven:
            self.identify()
        return {"Authorization": f"Bearer {self._token}"}

    def _send(self, method: str, path: str, *, content: bytes | None,
              headers: dict[str, str], timeout: float | None) -> Answer:
        try:
            response = self._http.request(method, path, body=content, headers=headers,
                                          timeout=timeout)
        except HttpFailure as e:
            raise self._unreachable(e) from e
        if response.status >= 400:
            raise AgentError(self.name, response.status, _error_message(response.body,
                                                                        response.status))
        return response

    def _unreachable(self, failure: HttpFailure) -> NodeUnreachable:
        if failure.timed_out:
            return NodeUnreachable(f"node {self.name} ({self.url}) did not answer in time")
        return NodeUnreachable(f"node {self.name} ({self.url}) is unreachable: "
                               f"{failure.reason}")

    def _request(self, method: str, path: str, *, body: BaseModel | None = None,
                 timeout: float | None = None) -> Answer:
        content = body.model_dump_json().encode() if body is not None else None
        headers = self._authorization()
        if content:
            headers["Content-Type"] = "application/json"
        return self._send(method, path, content=content, headers=headers, timeout=timeout)

    def _get(self, path: str, model: type[M], *, timeout: float | None = None) -> M:
        return model.model_validate_json(self._request("GET", path, timeout=timeout).body)

    # -- endpoints -------------------------------------------------------------------------------

    def info(self) -> NodeInfo:
        return self._get("/info", NodeInfo)

    def repositories(self) -> list[RepositoryInfo]:
        raw = self._request("GET", "/repositories").json()
        return [RepositoryInfo.model_validate(item) for item in raw]

    def branches(self, repository: str, credentials: Credentials) -> dict[str, str]:
        body = BranchesRequest(repository=repository, credentials=credentials)
        response = self._request("POST", "/branches", body=body, timeout=90)
        return BranchesResponse.model_validate_json(response.body).heads

    def observe(self, *, timeout: float | None = None) -> Observation:
        return self._get("/observe", Observation, timeout=timeout)

    def committed_routes(self, repository: str, commit: str,
                         credentials: Credentials | None = None) -> dict[str, str]:
        """The route values a gateway commit carries (the node fetches it if it must)."""
        body = CommittedRoutesRequest(repository=repository, commit=commit,
                                      credentials=credentials)
        response = self._request("POST", "/committed-routes", body=body, timeout=90)
        return CommittedRoutesResponse.model_validate_json(response.body).routes

    def container_metrics(self, *, timeout: float | None = 10) -> MetricsResponse:
        """The agent's recent samples of each container (``sdp_node/metrics.py``)."""
        return self._get("/metrics/containers", MetricsResponse, timeout=timeout)

    def stats(self, container: str) -> ContainerStats:
        return self._get(f"/containers/{container}/stats", ContainerStats, timeout=30)

    def container_logs(self, container: str, *, tail: int = 100,
                       follow: bool = False) -> Iterator[tuple[str, str]]:
        """(timestamp, line) of a container's log: the last ``tail`` lines, then new ones
        while ``follow``."""
        query = {"tail": str(tail), "follow": "true" if follow else "false"}
        try:
            with self._http.stream(
                f"/containers/{container}/logs", query=query, headers=self._authorization(),
                connect_timeout=STREAM_CONNECT_TIMEOUT, read_timeout=None if follow else 60.0,
            ) as response:
                if response.status >= 400:
                    raise AgentError(self.name, response.status,
                                     _error_message(response.body(), response.status))
                for data in _sse_data(response.lines()):
                    item = json.loads(data)
                    if "line" not in item:
                        return
                    yield str(item.get("at", "")), str(item["line"])
        except HttpFailure as e:
            raise NodeUnreachable(f"node {self.name}: the log stream broke: {e.reason}") from e

    def acquire_lease(self, holder: str, ttl: float) -> Lease:
        body = LeaseRequest(holder=holder, ttl_seconds=ttl)
        return Lease.model_validate_json(self._request("POST", "/lease", body=body).body)

    def renew_lease(self, lease_id: str, holder: str, ttl: float) -> Lease:
        body = LeaseRequest(holder=holder, ttl_seconds=ttl)
        return Lease.model_validate_json(
            self._request("PUT", f"/lease/{lease_id}", body=body).body
        )

    def release_lease(self, lease_id: str) -> None:
        self._request("DELETE", f"/lease/{lease_id}")

    def apply(
        self, *, lease_id: str, steps: Sequence[Step], requested_by: str,
        credentials: Credentials | None,
    ) -> str:
        body = ApplyRequest(
            lease_id=lease_id, steps=list(steps), requested_by=requested_by,
            credentials=credentials,
        )
        response = self._request("POST", "/apply", body=body)
        return ApplyResponse.model_validate_json(response.body).operation_id

    def operation(self, operation_id: str) -> OperationSummary:
        return self._get(f"/operations/{operation_id}", OperationSummary)

    def operations(self) -> list[OperationSummary]:
        raw = self._request("GET", "/operations").json()
        return [OperationSummary.model_validate(item) for item in raw]

    def follow(self, operation_id: str, *, after: int = 0) -> Iterator[OperationEvent]:
        """Every event of the operation after ``after``, until its end; survives reconnects."""
        last = after
        failures = 0
        while True:
            try:
                for event in self._stream(operation_id, last):
                    last = event.id
                    failures = 0
                    yield event
                    if event.kind == "end":
                        return
            except (HttpFailure, NodeUnreachable) as e:
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    reason = e.reason if isinstance(e, HttpFailure) else str(e)
                    raise NodeUnreachable(
                        f"lost the event stream of operation {operation_id} on node "
                        f"{self.name}: {reason}"
                    ) from e
                time.sleep(min(0.1 * failures, 2.0))

    def _stream(self, operation_id: str, last: int) -> Iterator[OperationEvent]:
        headers = {"Last-Event-ID": str(last), "Accept": "text/event-stream",
                   **self._authorization()}
        with self._http.stream(
            f"/operations/{operation_id}/events", headers=headers,
            connect_timeout=STREAM_CONNECT_TIMEOUT, read_timeout=60.0,
        ) as response:
            if response.status >= 400:
                raise AgentError(self.name, response.status,
                                 _error_message(response.body(), response.status))
            for data in _sse_data(response.lines()):
                yield OperationEvent.model_validate_json(data)
        raise HttpFailure("the event stream ended before the operation's end")


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    buffer: list[str] = []
    for line in lines:
        if line == "":
            if buffer:
                yield "\n".join(buffer)
                buffer = []
        elif line.startswith("data:"):
            buffer.append(line[5:].lstrip(" "))


def _error_message(body: bytes, status: int) -> str:
    try:
        answer: Any = json.loads(body)
        return str(answer["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"
