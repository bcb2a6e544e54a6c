"""``GET /events``: the one event stream a page opens (Server-Sent Events).

``?sandbox=NAME`` narrows it to one sandbox (the sandbox page); without it every sandbox's
events come (the overview). Each history event is sent as ``event: progress`` with the
event's database id as its SSE id and its row (with the deployment's service, resource, node
and action) as JSON data. ``event: status`` (no id) says the status or a deployment's outcome
changed, so the page refetches its summaries. A stream starts after ``Last-Event-ID`` (what a
browser sends when it reconnects), else after ``?after=ID`` (the last event the page was
rendered with), else at the present; a reconnect further behind than ``catch_up_limit``, or
ahead of the newest event (another history's id), gets ``event: reload``; a start that is not
plain digits counts as none. Idle streams carry a comment heartbeat. When the client goes away the
subscription is dropped at once (``open_streams`` in /healthz counts them); a sign-out ends
that session's streams at once on this page host, and within a heartbeat interval on another
sharing the history, as does the expiry of a session (checked once a heartbeat, not per event).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from sdp_reconciler.web import queries
from sdp_reconciler.web.context import PageContext
from sdp_reconciler.web.hub import BATCH, progress_event


def _start_after(request: Request) -> int | None:
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        after = queries.row_id(value)
        if after is not None:
            return after
    return None


async def events(request: Request) -> Response:
    context: PageContext = request.app.state.context
    sandbox = request.query_params.get("sandbox") or None
    after = _start_after(request)
    settings = context.settings
    history = context.history
    token = request.scope.get("state", {}).get("session_token")

    async def read(after_id: int) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(
            lambda: queries.events_after(history, after_id, sandbox=sandbox, limit=BATCH))

    async def stream() -> AsyncIterator[ServerSentEvent | bytes]:
        subscription = await context.hub.subscribe(sandbox, session=token)
        try:
            # The present is read before "connected" is said: an event written after that
            # comment has a larger id, so it comes, whether the stream has a start or not.
            last = await anyio.to_thread.run_sync(queries.last_event_id, history)
            yield ServerSentEvent(comment="connected", retry=settings.retry_ms)
            sent = last if after is None else after
            # Far behind, or ahead of every row: a start past the newest event comes from
            # another history (moved, or started anew), and would wait for ids never to come.
            if last - sent > settings.catch_up_limit or sent > last:
                yield ServerSentEvent("{}", event="reload", id=str(last))
                sent = last
            caught_up = False
            checked = time.monotonic()
            while True:
                if not caught_up:
                    rows = await read(sent)
                    for row in rows:
                        yield progress_event(row)
                        sent = int(row["id"])
                    caught_up = len(rows) < BATCH
                    continue
                notices = await subscription.next_batch(settings.heartbeat_seconds)
                if notices is None:
                    return  # the server is stopping, or the viewer signed out here
                if time.monotonic() - checked >= settings.heartbeat_seconds:
                    # The session lives in the history (shared by page hosts): asked once a
                    # heartbeat, not per event, so 20 viewers cost no 20 queries an event.
                    if await anyio.to_thread.run_sync(context.sessions.get, token) is None:
                        return  # expired, or signed out on another page host
                    checked = time.monotonic()
                if subscription.overflowed:
                    subscription.overflowed = False
                    caught_up = False
                    yield ServerSentEvent("{}", event="status")
                    continue
                status = False
                for notice in notices:
                    if notice.kind == "status":
                        status = True
                    elif notice.row is not None and int(notice.row["id"]) > sent:
                        yield notice.frame()
                        sent = int(notice.row["id"])
                if status:
                    yield ServerSentEvent("{}", event="status")
        finally:
            context.hub.unsubscribe(subscription)

    return EventSourceResponse(
        stream(), ping=settings.heartbeat_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
