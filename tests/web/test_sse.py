"""The page's event stream on a real server: ids, resume, heartbeat, status, release.

The history is written with the reconciler's own ``History`` writer while streams are open,
as ``--once`` in another process would; the page tails it with its one shared poller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from sdp_reconciler.history import StatusRow
from sdp_reconciler.web import WebSettings
from tests.web.live import LivePage, Sse, parse, start_live_page

SETTINGS = WebSettings(poll_interval=0.05, heartbeat_seconds=30)


@pytest.fixture
def page(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LivePage]:
    settings = getattr(request, "param", SETTINGS)
    live = start_live_page(tmp_path, settings)
    try:
        yield live
    finally:
        live.server.stop()
        live.history.close()


def take(events: Iterator[Sse], count: int, *, kind: str = "progress") -> list[Sse]:
    taken = []
    for event in events:
        if event.event == kind:
            taken.append(event)
            if len(taken) == count:
                return taken
    raise AssertionError(f"the stream ended after {len(taken)} {kind} events")


def open_stream(client: httpx.Client, path: str = "/events", **headers: str
                ) -> httpx.Response:
    request = client.build_request("GET", path, headers=headers)
    response = client.send(request, stream=True)
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    return response


def test_events_arrive_as_they_are_written_with_their_database_ids(page: LivePage) -> None:
    with page.client(timeout=10) as client:
        response = open_stream(client)
        events = parse(response.iter_lines())
        first = next(events)
        assert first.comment == "connected"
        page.wait_open_streams(1, timeout=10)
        ids = [page.log(f"line {n}", stage="go build") for n in range(3)]
        received = take(events, 3)
        response.close()
    assert [e.id for e in received] == [str(i) for i in ids]
    assert [e.json()["message"] for e in received] == ["line 0", "line 1", "line 2"]
    assert received[0].json()["stage"] == "go build" and received[0].json()["sandbox"] == "S1"


def test_a_sandbox_stream_carries_only_that_sandbox(page: LivePage) -> None:
    with page.client(timeout=10) as client:
        response = open_stream(client, "/events?sandbox=S2")
        events = parse(response.iter_lines())
        page.wait_open_streams(1, timeout=10)
        page.log("for S1", sandbox="S1")
        mine = page.log("for S2", sandbox="S2")
        received = take(events, 1)
        response.close()
    assert received[0].id == str(mine) and received[0].json()["message"] == "for S2"


def test_a_reconnect_with_last_event_id_gets_exactly_what_it_missed(page: LivePage) -> None:
    ids = [page.log(f"before {n}") for n in range(5)]
    with page.client(timeout=10) as client:
        response = open_stream(client, **{"Last-Event-ID": str(ids[1])})
        got = take(parse(response.iter_lines()), 3)
        response.close()
        assert [e.id for e in got] == [str(i) for i in ids[2:]]
        page.wait_open_streams(0, timeout=10)
        later = [page.log(f"while away {n}") for n in range(2)]
        response = open_stream(client, **{"Last-Event-ID": got[-1].id or ""})
        events = parse(response.iter_lines())
        again = take(events, 2)
        newest = page.log("live again")
        live = take(events, 1)
        response.close()
    assert [e.id for e in again] == [str(i) for i in later]
    assert live[0].id == str(newest)


def test_last_event_id_wins_over_the_after_parameter(page: LivePage) -> None:
    ids = [page.log(f"n{n}") for n in range(4)]
    with page.client(timeout=10) as client:
        response = open_stream(client, f"/events?after={ids[0]}",
                               **{"Last-Event-ID": str(ids[2])})
        got = take(parse(response.iter_lines()), 1)
        response.close()
        assert got[0].id == str(ids[3])
        response = open_stream(client, f"/events?after={ids[1]}")
        got = take(parse(response.iter_lines()), 2)
        response.close()
    assert [e.id for e in got] == [str(ids[2]), str(ids[3])]


def test_a_start_that_is_no_row_id_is_none_and_one_past_the_newest_reloads(
    page: LivePage,
) -> None:
    newest = page.log("n0")
    with page.client(timeout=10) as client:
        for after in ("²", "-1"):  # '²' passes str.isdigit, and int() refuses it: was a 500
            response = open_stream(client, f"/events?after={after}")
            events = parse(response.iter_lines())
            assert next(events).comment == "connected"
            newest = page.log(f"after {after}")
            assert take(events, 1)[0].id == str(newest)  # from the present on
            response.close()
        # Past every row (5,000 digits: also more than int() reads): the id of another
        # history, moved or started anew. Waiting for it would show nothing, ever.
        response = open_stream(client, **{"Last-Event-ID": "9" * 5000})
        events = parse(response.iter_lines())
        reload = take(events, 1, kind="reload")
        later = page.log("after the reload")
        live = take(events, 1)
        response.close()
    assert reload[0].id == str(newest)
    assert live[0].id == str(later)


@pytest.mark.parametrize("page", [WebSettings(poll_interval=0.05, heartbeat_seconds=0.3)],
                         indirect=True)
def test_an_idle_stream_gets_a_heartbeat(page: LivePage) -> None:
    with page.client(timeout=10) as client:
        response = open_stream(client)
        started = time.monotonic()
        events = parse(response.iter_lines())
        comments = [e.comment for e in (next(events), next(events))]
        response.close()
    assert comments[0] == "connected" and comments[1] is not None
    assert comments[1].startswith("ping")
    assert time.monotonic() - started < 5


def test_a_status_change_is_announced(page: LivePage) -> None:
    with page.client(timeout=10) as client:
        response = open_stream(client)
        events = parse(response.iter_lines())
        page.wait_open_streams(1, timeout=10)
        page.history.set_status([StatusRow(sandbox="S1", service="", node=None, sync="InSync",
                                           health="Healthy", reason="UpToDate")],
                                sandboxes={"S1"})
        status = take(events, 1, kind="status")
        response.close()
    assert status[0].id is None, "a status event must not move the resume point"


@pytest.mark.parametrize("page", [WebSettings(poll_interval=0.05, catch_up_limit=10)],
                         indirect=True)
def test_a_reconnect_far_behind_is_told_to_reload(page: LivePage) -> None:
    ids = [page.log(f"n{n}") for n in range(20)]
    with page.client(timeout=10) as client:
        response = open_stream(client, **{"Last-Event-ID": str(ids[0])})
        events = parse(response.iter_lines())
        reload = take(events, 1, kind="reload")
        newest = page.log("after the reload")
        live = take(events, 1)
        response.close()
    assert reload[0].id == str(ids[-1])
    assert live[0].id == str(newest)


@pytest.mark.parametrize("page", [WebSettings(poll_interval=0.2, queue_size=5)],
                         indirect=True)
def test_a_burst_larger_than_a_stream_queue_loses_nothing(page: LivePage) -> None:
    with page.client(timeout=20) as client:
        response = open_stream(client)
        events = parse(response.iter_lines())
        page.wait_open_streams(1, timeout=10)
        ids = [page.log(f"burst {n}") for n in range(200)]
        got = take(events, 200)
        response.close()
    assert [e.id for e in got] == [str(i) for i in ids]


def test_a_client_that_goes_away_releases_its_stream(page: LivePage) -> None:
    assert page.health()["open_streams"] == 0
    with page.client(timeout=10) as client:
        response = open_stream(client)
        events = parse(response.iter_lines())
        assert next(events).comment == "connected"
        page.wait_open_streams(1, timeout=10)
        assert page.health()["polling"] is True
        response.close()
    page.wait_open_streams(0, timeout=60)
    deadline = time.monotonic() + 10
    while page.health()["polling"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert page.health()["polling"] is False, "the poller stops when no stream is open"


def test_fifty_streams_then_all_disconnect(page: LivePage) -> None:
    count = 50

    async def run() -> list[str]:
        limits = httpx.Limits(max_connections=count + 5)
        async with httpx.AsyncClient(base_url=page.url, cookies=page.cookies, timeout=30,
                                     limits=limits) as client:
            streams = []
            for _ in range(count):
                request = client.build_request("GET", "/events")
                streams.append(await client.send(request, stream=True))
            lines = [s.aiter_lines() for s in streams]
            for line_iterator in lines:
                assert (await anext(line_iterator)).startswith(":")
            await asyncio.to_thread(page.wait_open_streams, count, timeout=30)
            event_id = await asyncio.to_thread(page.log, "to everyone")

            async def first_id(line_iterator: AsyncIterator[str]) -> str:
                async for line in line_iterator:
                    if line.startswith("id:"):
                        return str(line[3:].strip())
                raise AssertionError("stream ended")

            received = await asyncio.gather(*(first_id(it) for it in lines))
            assert set(received) == {str(event_id)}
            await asyncio.gather(*(s.aclose() for s in streams))
            return list(received)

    received = asyncio.run(run())
    assert len(received) == count
    seconds = page.wait_open_streams(0, timeout=60)
    assert seconds < 60


def test_stopping_the_server_ends_open_streams(tmp_path: Path) -> None:
    live = start_live_page(tmp_path, SETTINGS)
    try:
        with live.client(timeout=10) as client:
            response = open_stream(client)
            events = parse(response.iter_lines())
            next(events)
            live.wait_open_streams(1, timeout=10)
            started = time.monotonic()
            live.server.stop()
            rest = list(events)
            response.close()
        assert time.monotonic() - started < 5
        assert all(e.event != "progress" for e in rest)
    finally:
        live.server.stop()
        live.history.close()


@pytest.mark.parametrize("page", [WebSettings(poll_interval=0.05, heartbeat_seconds=600)],
                         indirect=True)
def test_signing_out_ends_the_streams_of_that_session(page: LivePage) -> None:
    # Nothing else would end the stream for ten minutes: the logout itself must, and a stream
    # still open after it fails the read with the client's 5 s timeout.
    with page.client(timeout=5) as client:
        response = open_stream(client)
        events = parse(response.iter_lines())
        assert next(events).comment == "connected"
        page.wait_open_streams(1, timeout=10)
        assert client.post("/logout").status_code == 303
        rest = list(events)
        response.close()
    assert all(e.event != "progress" for e in rest)
    page.wait_open_streams(0, timeout=10)
