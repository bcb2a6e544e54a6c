"""One reader per process that tails the history's ``events`` table and feeds every open stream.

The reconciler (``--once`` or ``watch``, in this process or another, on this host or, with a
PostgreSQL history, any other) writes events as they happen, with increasing ids. ``EventHub``
reads the rows after the last id it saw (only while at least one stream is open): on SQLite
every ``interval`` seconds; on PostgreSQL when a write's NOTIFY wakes it (``History.listen``),
and every ``listen_fallback`` seconds in case a notification was lost. A NOTIFY is read at once
on the listener's own connection and thread (one statement for the new rows and the change
marker), with no hop through a worker thread or a pooled connection: on a busy host every
extra thread or process to wake adds to the tail of the latency from a write to the page. It
hands each row to the subscriptions that want it (all rows, or one sandbox's), in the order
read. It also notices when the status, a pass or a deployment's outcome changed and tells
every subscription, so pages refresh their summaries.

Promises: a subscription receives every row committed after it subscribed (rows before that
are read by the stream itself, see ``stream.py``); a slow subscription never blocks the poller
(past ``queue_size`` rows it is marked ``overflowed`` and reads the history itself); closing
the hub wakes every subscription so streams end; ending a session (sign-out) wakes and ends
its streams at once; ``open_streams`` counts live subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from typing import Any, Literal

import anyio.to_thread
from msgspec import Struct, field
from sse_starlette import ServerSentEvent

from sdp_reconciler.history import History
from sdp_reconciler.historydb import Listener
from sdp_reconciler.web import queries

log = logging.getLogger("sdp_reconciler.web")
BATCH = 500


def progress_event(row: dict[str, Any]) -> ServerSentEvent:
    """A history event as the stream sends it: its row as JSON, its id as the SSE id."""
    return ServerSentEvent(json.dumps(row, separators=(",", ":")), event="progress",
                           id=str(row["id"]))


class Notice(Struct):
    kind: Literal["progress", "status"]
    row: dict[str, Any] | None = None
    _frame: bytes | None = None

    def frame(self) -> bytes:
        """The progress event, encoded once for every stream that sends it."""
        if self._frame is None:
            assert self.row is not None
            self._frame = progress_event(self.row).encode()
        return self._frame


class Subscription(Struct, eq=False):
    sandbox: str | None
    limit: int
    session: str | None = None
    """the session token of the viewer the stream is for"""
    notices: deque[Notice] = field(default_factory=deque)
    overflowed: bool = False
    closed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, notice: Notice) -> None:
        if notice.kind == "progress" and self.sandbox is not None and notice.row is not None \
                and notice.row["sandbox"] != self.sandbox:
            return
        if len(self.notices) >= self.limit:
            self.notices.clear()
            self.overflowed = True
        self.notices.append(notice)
        self.wake.set()

    async def next_batch(self, timeout: float) -> list[Notice] | None:
        """Notices, waiting up to ``timeout`` s ([] if none came); None once the hub closed."""
        if not self.notices and not self.closed:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
        if self.closed:
            return None
        batch = list(self.notices)
        self.notices.clear()
        return batch


class EventHub:
    def __init__(self, history: History, *, interval: float, queue_size: int,
                 listen_fallback: float = 5.0) -> None:
        self.history = history
        self.interval = interval
        self.listen_fallback = listen_fallback
        self.queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._last_id = 0
        """the last id handed to the subscriptions (the loop's)"""
        self._read_id = 0
        """the last id read (the reading thread's, under ``_read_lock``)"""
        self._read_lock = threading.Lock()
        self._marker: tuple[Any, ...] = ()
        self._closed = False
        self._wake = asyncio.Event()
        self._listener: Listener | None = None
        self._listening = False

    @property
    def open_streams(self) -> int:
        return len(self._subscriptions)

    @property
    def polling(self) -> bool:
        return self._task is not None and not self._task.done()

    async def subscribe(self, sandbox: str | None, *, session: str | None = None) -> Subscription:
        async with self._start_lock:
            if not self.polling:
                # Read the starting point before anyone subscribes: every row up to it is
                # already in the database, where the stream's own catch-up will read it.
                await anyio.to_thread.run_sync(self._start_point)
            subscription = Subscription(sandbox=sandbox, limit=self.queue_size, session=session)
            subscription.closed = self._closed
            self._subscriptions.add(subscription)
            if not self.polling and not self._closed:
                loop = asyncio.get_running_loop()
                if not self._listening:
                    self._listening = True

                    def wake() -> None:  # from the listener's thread
                        self._woken(loop)

                    self._listener = await anyio.to_thread.run_sync(self.history.listen, wake)
                self._task = loop.create_task(self._poll())
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def end_session(self, session: str | None) -> None:
        """End at once every stream opened by ``session`` (its viewer signed out)."""
        for subscription in list(self._subscriptions):
            if session is not None and subscription.session == session:
                subscription.closed = True
                subscription.wake.set()

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.closed = True
            subscription.wake.set()
        if self._listener is not None:
            await anyio.to_thread.run_sync(self._listener.close)
            self._listener = None
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._subscriptions and not self._closed:
                self._wake.clear()
                try:
                    count = await anyio.to_thread.run_sync(self._read, self.history, loop)
                except Exception:  # a locked or replaced file: try again next tick
                    log.exception("reading the history's events failed; retrying")
                    count = 0
                if count < BATCH:
                    await self._pause()
        finally:
            self._task = None

    def _start_point(self) -> None:
        """The last id and the change marker now (a worker thread)."""
        with self._read_lock:
            self._read_id = queries.last_event_id(self.history)
            self._last_id = self._read_id
            self._marker = queries.change_marker(self.history)

    def _read(self, source: queries.Reader, loop: asyncio.AbstractEventLoop) -> int:
        """Read the new events and the change marker from ``source`` (in a worker thread or the
        listener's) and hand them to the loop, in the order read; how many rows came."""
        with self._read_lock:
            rows, marker = queries.events_and_marker(source, self._read_id, limit=BATCH)
            if rows:
                self._read_id = int(rows[-1]["id"])
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._deliver, rows, marker)
        return len(rows)

    def _woken(self, loop: asyncio.AbstractEventLoop) -> None:
        """A write was committed (the listener's thread): read it there, on the listener's
        connection; without a stream open, or when that fails, leave it to the poller."""
        listener = self._listener
        if listener is not None and self._subscriptions and not self._closed:
            try:
                while self._read(listener, loop) >= BATCH:
                    pass
                return
            except Exception:
                log.exception("reading the history's events on its notification failed")
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._wake.set)

    def _deliver(self, rows: list[dict[str, Any]], marker: tuple[Any, ...]) -> None:
        """Hand rows and a changed marker to the subscriptions (the loop's thread)."""
        for row in rows:
            if int(row["id"]) <= self._last_id:
                continue
            self._last_id = int(row["id"])
            notice = Notice("progress", row)
            for subscription in list(self._subscriptions):
                subscription.offer(notice)
        if marker != self._marker:
            self._marker = marker
            for subscription in list(self._subscriptions):
                subscription.offer(Notice("status"))

    async def _pause(self) -> None:
        """Until the next read: a NOTIFY (or the fallback) on PostgreSQL, else ``interval``."""
        if self._listener is None:
            await asyncio.sleep(self.interval)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.listen_fallback)
