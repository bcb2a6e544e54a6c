"""``POST /hooks/bitbucket``: Bitbucket push webhooks into ``watch``'s pass loop.

In this order, so that an unauthenticated request costs nothing but a counter: the request
rate (per client and in total; 429), the declared and the actual body size (read with a cap;
413), the ``X-Hub-Signature`` HMAC of the raw body, checked in constant time (401: nothing is
parsed, recorded or changed), then the payload (400 when it is not the push its event key
says). What a signed push means is decided by ``receive`` (``watch``: a pass over the state,
a pass scoped to the sandboxes tracking that branch, or nothing); the answer is 202 with what
was decided. Without a secret configured on the host the endpoint refuses everything (503).

``HookCounters`` counts every outcome (the ``/metrics`` of the listener can read them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from msgspec import Struct
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sdp_node.protocol import Secret
from sdp_reconciler.web.bitbucket import (
    EVENT_HEADER,
    MAX_BODY_BYTES,
    SERVER_PING,
    SIGNATURE_HEADER,
    PayloadError,
    Push,
    RateLimit,
    parse_push,
    signature_ok,
)

PATH = "/hooks/bitbucket"


class HookAnswer(Struct, frozen=True):
    """What ``watch`` made of a signed push: ``queued`` (a pass will run) or ``ignored``."""

    result: str
    detail: str


Receive = Callable[[Push, str], HookAnswer]
"""(push, event key) -> the answer; runs in a worker thread, may record and enqueue"""


class HookCounters:
    """How many requests ended how, since the process started."""

    OUTCOMES = ("queued", "ignored", "unauthorized", "too_large", "rate_limited",
                "bad_payload", "not_configured")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.OUTCOMES, 0)

    def add(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] = self._counts.get(outcome, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _answer(status: int, result: str, detail: str) -> Response:
    return JSONResponse({"result": result, "detail": detail}, status_code=status)


class BitbucketHook:
    """The endpoint; ``route()`` is what the listener mounts."""

    def __init__(self, *, secret: Secret | None, receive: Receive,
                 limit: RateLimit | None = None, max_body: int = MAX_BODY_BYTES) -> None:
        self._secret = secret.reveal().encode() if secret is not None else b""
        self._receive = receive
        self.limit = limit or RateLimit()
        self.max_body = max_body
        self.counters = HookCounters()

    def route(self) -> Route:
        return Route(PATH, self.handle, methods=["POST"])

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None once it passes ``max_body`` (the rest is never read)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: Request) -> Response:
        counters = self.counters
        client = request.client.host if request.client else "unknown"
        if not self.limit.allow(client):
            counters.add("rate_limited")
            return Response("too many requests\n", status_code=429,
                            headers={"Retry-After": str(int(self.limit.window))})
        if not self._secret:
            counters.add("not_configured")
            return _answer(503, "refused", "no webhook secret on the reconciler host: set "
                           "SDP_WEBHOOK_SECRET or webhooks.secret in reconciler.yaml")
        try:
            body = await self._body(request)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            counters.add("too_large")
            return _answer(413, "refused", f"the body is larger than {self.max_body} bytes")
        if not signature_ok(self._secret, body, request.headers.get(SIGNATURE_HEADER)):
            counters.add("unauthorized")
            return _answer(401, "refused", f"missing or wrong {SIGNATURE_HEADER} (HMAC-SHA256 "
                           "of the body with the webhook secret)")
        event = request.headers.get(EVENT_HEADER, "")
        if event == SERVER_PING:
            counters.add("ignored")
            return _answer(200, "pong", "the signature holds")
        try:
            push = parse_push(event, body)
        except PayloadError as e:
            counters.add("bad_payload")
            return _answer(400, "refused", str(e))
        if push is None:
            counters.add("ignored")
            return _answer(202, "ignored", f"event {json.dumps(event)} is not a push")
        answer = await run_in_threadpool(self._receive, push, event)
        counters.add(answer.result if answer.result in HookCounters.OUTCOMES else "ignored")
        return _answer(202, answer.result, answer.detail)


__all__ = ["PATH", "BitbucketHook", "HookAnswer", "HookCounters", "Receive"]
