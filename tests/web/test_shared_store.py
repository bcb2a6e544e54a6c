"""The page over a store it shares: sessions survive a restart and are shared by page hosts
(stored hashed), and on PostgreSQL a write by another process reaches the stream by NOTIFY."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdp_reconciler.web import WebSettings
from sdp_reconciler.web.sessions import COOKIE
from tests.support.pghistory import PgHistory, history_db
from tests.web.live import LivePage, parse, start_live_page

# The poll interval and the NOTIFY fallback are far longer than any wait here: on PostgreSQL an
# event can only arrive through LISTEN/NOTIFY.
PUSH_ONLY = WebSettings(poll_interval=0.05, listen_fallback=600, heartbeat_seconds=30)


@pytest.fixture
def pg() -> Iterator[PgHistory]:
    yield from history_db("page")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    if request.param == "sqlite":
        yield str(tmp_path / "history.sqlite"), {}
    else:
        yield from ((db.url, db.env) for db in history_db("page"))


def _stop(page: LivePage) -> None:
    page.server.stop()
    page.history.close()


def _signed_in(page_url: str, cookies: dict[str, str]) -> bool:
    answer = httpx.get(f"{page_url}/fragments/overview", cookies=cookies, timeout=10)
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def test_a_page_restart_keeps_a_signed_in_session_stored_only_hashed(
        tmp_path: Path, store: tuple[str, dict[str, str]]) -> None:
    where, env = store
    first = start_live_page(tmp_path, PUSH_ONLY, history=where, env=env)
    token = first.cookies[COOKIE]
    assert _signed_in(first.url, first.cookies)
    _stop(first)
    again = start_live_page(tmp_path, PUSH_ONLY, history=where, env=env, sign_in=False)
    try:
        assert _signed_in(again.url, first.cookies), "the restart signed the viewer out"
        rows = again.history.query("SELECT * FROM sessions")
        assert [r["token_sha256"] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        assert all(token not in str(value) for r in rows for value in r.values())
        # dead after logout, for this page and any later one
        with httpx.Client(base_url=again.url, cookies=first.cookies, timeout=10,
                          headers={"Origin": again.url}) as client:
            assert client.post("/logout").status_code == 303
        assert not _signed_in(again.url, first.cookies)
        assert again.history.query("SELECT * FROM sessions") == []
    finally:
        _stop(again)


def test_page_hosts_sharing_postgresql_share_sessions_and_a_logout_ends_them_everywhere(
        tmp_path: Path, pg: PgHistory) -> None:
    one = start_live_page(tmp_path / "one", PUSH_ONLY, history=pg.url, env=pg.env)
    two = start_live_page(tmp_path / "two", PUSH_ONLY, history=pg.url, env=pg.env,
                          sign_in=False)
    try:
        assert _signed_in(two.url, one.cookies), "a session made on one page host works on two"
        # a login on two with one's cookie rotates it: the old token is dead on both
        answer = httpx.post(f"{two.url}/login", data={"username": "viewer", "password": "pw"},
                            cookies=one.cookies, timeout=10)
        assert answer.status_code == 303
        rotated = dict(answer.cookies)
        assert rotated[COOKIE] != one.cookies[COOKIE]
        assert not _signed_in(one.url, one.cookies)
        assert _signed_in(one.url, rotated)
        with httpx.Client(base_url=two.url, cookies=rotated, timeout=10,
                          headers={"Origin": two.url}) as client:
            assert client.post("/logout").status_code == 303
        assert not _signed_in(one.url, rotated)
    finally:
        _stop(one)
        _stop(two)


WRITER = """
import sys
from sdp_reconciler.history import History
h = History(sys.argv[1])
p = h.start_pass(mode="once", runner="ci-runner", state_revision=None)
h.add_event(pass_id=p, sandbox="S1", kind="log", message="from another process")
h.finish_pass(p, status="OK", summary="")
h.close()
"""


def test_a_write_by_another_process_reaches_the_stream_by_notify(
        tmp_path: Path, pg: PgHistory) -> None:
    page = start_live_page(tmp_path, PUSH_ONLY, history=pg.url, env=pg.env)
    try:
        with page.client(timeout=30) as client:
            response = client.send(client.build_request("GET", "/events"), stream=True)
            assert response.status_code == 200
            events = parse(response.iter_lines())
            assert next(events).comment == "connected"
            page.wait_open_streams(1, timeout=10)
            done = subprocess.run([sys.executable, "-c", WRITER, pg.url], env=pg.env | {
                "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            kinds = []
            for event in events:
                if event.event in ("progress", "status"):
                    kinds.append(event.event)
                    if event.event == "progress":
                        assert event.json()["message"] == "from another process"
                if "progress" in kinds and "status" in kinds:
                    break
            response.close()
        assert page.history.query("SELECT mode FROM passes") == [{"mode": "once"}]
    finally:
        _stop(page)


BURST = """
import sys
from sdp_reconciler.history import History
h = History(sys.argv[1])
for n in range(int(sys.argv[2])):
    h.add_event(sandbox="S1", kind="log", message=f"burst {n}")
h.close()
"""


def test_a_burst_by_another_process_reaches_the_stream_whole_and_in_order_by_notify(
        tmp_path: Path, pg: PgHistory) -> None:
    """More events than one read takes (500), each its own transaction: the page reads them on
    its listening connection as the notifications come, none lost, none twice, in id order."""
    page = start_live_page(tmp_path, PUSH_ONLY, history=pg.url, env=pg.env)
    count = 1200
    try:
        with page.client(timeout=60) as client:
            response = client.send(client.build_request("GET", "/events"), stream=True)
            events = parse(response.iter_lines())
            assert next(events).comment == "connected"
            page.wait_open_streams(1, timeout=10)
            writer = subprocess.Popen([sys.executable, "-c", BURST, pg.url, str(count)],
                                      env=pg.env | {"PATH": "/usr/bin:/bin"},
                                      stderr=subprocess.PIPE, text=True)
            try:
                messages = []
                for event in events:
                    if event.event == "progress":
                        messages.append((int(event.id or 0), event.json()["message"]))
                        if len(messages) == count:
                            break
            finally:
                assert writer.wait(timeout=120) == 0, writer.stderr.read() if writer.stderr \
                    else ""
            response.close()
        ids = [i for i, _ in messages]
        assert ids == sorted(set(ids)), "in id order, none twice"
        assert [m for _, m in messages] == [f"burst {n}" for n in range(count)]
    finally:
        _stop(page)
