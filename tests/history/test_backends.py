"""One History API on both databases: every public method behaves alike on SQLite and on a real
PostgreSQL server; a newer schema is refused; credentials never leak; writes push on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import MIGRATIONS, History, Retention, StatusRow
from sdp_reconciler.historydb import parse_location, postgres_ddl, postgres_sql
from sdp_reconciler.redaction import redact
from sdp_testbed.waiting import wait_for
from tests.support.data import new_password
from tests.support.pghistory import PgHistory


def _one_pass(history: History) -> tuple[int, int]:
    pass_id = history.start_pass(mode="once", runner="ci@runner-7", state_revision="abc")
    deployment = history.start_deployment(
        pass_id=pass_id, step_id="s1", sandbox="alpha", service="web", node="micro-1",
        resource="r", action="create service", reason="new", runner="ci@runner-7",
        status="RUNNING", uncommitted=0)
    history.add_event(pass_id=pass_id, deployment_id=deployment, sandbox="alpha", kind="log",
                      message="100% done? yes")
    history.update_deployment(deployment, completed_at="2026-01-01T00:00:00.000+00:00",
                              stage="done")
    history.add_audit(deployment_id=deployment, user="jane", runner="ci@runner-7",
                      action="create service", sandbox="alpha", service="web",
                      status="RUNNING")
    history.finish_pass(pass_id, status="OK", summary="1 change")
    return pass_id, deployment


def test_every_method_behaves_alike_on_both(location: tuple[str, dict[str, str]]) -> None:
    where, env = location
    history = History(where, env=env)
    try:
        pass_id, deployment = _one_pass(history)
        assert pass_id >= 1 and deployment >= 1
        passes = history.query("SELECT * FROM passes")
        assert [(p["status"], p["summary"]) for p in passes] == [("OK", "1 change")]
        events = history.events_after(0)
        assert [e["message"] for e in events] == ["100% done? yes"]
        assert history.events_after(events[0]["id"]) == []
        # a reserved word of PostgreSQL as a column; % and ? inside literals stay themselves
        assert history.query("SELECT user FROM audit WHERE sandbox = ?", ("alpha",)) == \
            [{"user": "jane"}]
        assert history.query("SELECT COUNT(*) AS n FROM events WHERE message LIKE '100%? yes'"
                             " AND sandbox = ?", ("alpha",)) == [{"n": 1}]
        assert set(history.last_deploys()) == {"alpha"}

        history.set_status([StatusRow("alpha", "web", "micro-1", "OutOfSync", "Healthy", "new")],
                           sandboxes={"alpha"})
        history.set_status([StatusRow("alpha", "web", "micro-2", "InSync", "Healthy", "ok"),
                            StatusRow("beta", "api", "micro-1", "InSync", "Healthy", "ok")],
                           sandboxes={"alpha"})
        assert [(r["sandbox"], r["node"], r["sync"]) for r in history.status()] == \
            [("alpha", "micro-2", "InSync"), ("beta", "micro-1", "InSync")]
        history.forget_sandboxes_except({"beta"})
        assert [r["sandbox"] for r in history.status()] == ["beta"]

        with history._write() as db:  # the seam other History methods build on
            db.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                           [("k1", "a"), ("k2", "b"), ("k1", "again")])
        assert (history.meta("k1"), history.meta("k2")) == ("a", "b")
        assert history.meta("last_commit") is None
        history.set_meta("last_commit", "c1")
        history.set_meta("last_commit", "c2")
        assert history.meta("last_commit") == "c2"
        history.set_meta("last_commit", None)
        assert history.meta("last_commit") is None

        refusal = {"sandbox": "alpha", "line": "state.yaml:3:1: refused", "commit": "c2",
                   "permission": "deploy", "runner": "ci"}
        assert history.add_refusal(**refusal) is True
        assert history.add_refusal(**refusal) is False
        assert history.prune(Retention(), force=True) == {
            "events": 0, "deployments": 0, "audit": 0, "passes": 0, "hooks": 0,
            "expiry_warnings": 0}
        assert history.prune(Retention()) == {}  # at most once an hour
    finally:
        history.close()
    again = History(where, env=env)  # reopening migrates nothing twice and keeps every row
    try:
        assert len(again.query("SELECT id FROM audit")) == 2
    finally:
        again.close()


def test_a_newer_schema_is_refused_with_what_to_do(location: tuple[str, dict[str, str]]) -> None:
    where, env = location
    History(where, env=env).close()
    if where.startswith("postgresql"):
        with psycopg.connect(where, password=env["PGPASSWORD"], autocommit=True) as db:
            db.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS) + 1,))
    else:
        with sqlite3.connect(where) as db:
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(SdpError, match=r"newer than this sdp-reconcile knows.*upgrade"):
        History(where, env=env)


def test_migrations_are_applied_at_start_on_postgresql(pg_history: PgHistory) -> None:
    # A database made by the first version: passes without host/pid, at schema version 0.
    with psycopg.connect(pg_history.url, password=pg_history.password, autocommit=True) as db:
        db.execute("CREATE TABLE passes (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
                   " started_at TEXT NOT NULL, finished_at TEXT, mode TEXT NOT NULL, runner TEXT"
                   " NOT NULL, state_revision TEXT, status TEXT NOT NULL DEFAULT 'RUNNING',"
                   " summary TEXT NOT NULL DEFAULT '')")
        db.execute("INSERT INTO passes (started_at, mode, runner) VALUES "
                   "('2026-01-01T00:00:00+00:00', 'once', 'x')")
    history = History(pg_history.url, env=pg_history.env)
    try:
        history.start_pass(mode="once", runner="ci", state_revision=None)
        rows = history.query("SELECT runner, host FROM passes ORDER BY id")
        assert [r["runner"] for r in rows] == ["x", "ci"] and rows[1]["host"]
        assert history.query("SELECT version FROM schema_version") == \
            [{"version": len(MIGRATIONS)}]
    finally:
        history.close()


def test_two_hosts_starting_at_once_migrate_once(pg_history: PgHistory) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            History(pg_history.url, env=pg_history.env).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_wrong_password_is_said_without_the_password(pg_history: PgHistory) -> None:
    canary = new_password("hist")
    with pytest.raises(SdpError) as caught:
        History(pg_history.url, env={"PGPASSWORD": canary})
    message = str(caught.value)
    assert "password authentication failed" in message
    assert canary not in message and canary not in repr(caught.value)
    assert canary not in str(caught.value.__cause__ or "")


def test_a_password_on_the_command_line_is_refused_and_one_in_the_url_is_redacted() -> None:
    canary = new_password("argv")
    url = f"postgresql://sdp:{canary}@127.0.0.1:17432/db"
    with pytest.raises(SdpError, match="command line") as caught:
        parse_location(url, {}, from_argv=True)
    assert canary not in str(caught.value)
    location = parse_location(url, {})  # from SDP_HISTORY: allowed, and never shown
    assert location.password == canary and canary not in str(location)
    assert canary not in redact(f"connecting with {canary}")
    ref = parse_location("postgresql://sdp@127.0.0.1:17432/db?password_env=HIST_PW",
                         {"HIST_PW": canary})
    assert ref.password == canary and "password_env" not in str(ref)
    with pytest.raises(SdpError, match=r"\$NOPE is not set"):
        parse_location("postgresql://sdp@127.0.0.1/db?password_env=NOPE", {})


def test_sqlite_locations(tmp_path: Path) -> None:
    assert parse_location(f"sqlite://{tmp_path}/h.sqlite").path == tmp_path / "h.sqlite"
    assert parse_location("rel/h.sqlite").path == Path("rel/h.sqlite")
    with pytest.raises(SdpError, match="sqlite:///ABSOLUTE"):
        parse_location("sqlite://rel/h.sqlite")
    with pytest.raises(SdpError, match="postgresql://USER@HOST"):
        parse_location("mysql://x/y")


def test_the_dialect_translation() -> None:
    assert postgres_sql("SELECT user, 'a?%' FROM audit WHERE id = ? AND note LIKE '%x'") == \
        "SELECT \"user\", 'a?%%' FROM audit WHERE id = %s AND note LIKE '%%x'"
    assert postgres_ddl("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, p INTEGER "
                        "NOT NULL REFERENCES passes(id), user TEXT)") == \
        ("CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, p BIGINT "
         "NOT NULL, \"user\" TEXT)")
    assert postgres_ddl("ALTER TABLE passes ADD COLUMN host TEXT") == \
        "ALTER TABLE passes ADD COLUMN IF NOT EXISTS host TEXT"
    assert postgres_sql("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)") == \
        "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    with pytest.raises(SdpError, match="ON CONFLICT"):
        postgres_sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")


def test_every_write_on_postgresql_wakes_listeners_on_other_connections(
        pg_history: PgHistory) -> None:
    reader = History(pg_history.url, env=pg_history.env)
    writer = History(pg_history.url, env=pg_history.env)
    woken = threading.Event()
    listener = reader.listen(woken.set)
    try:
        assert listener is not None
        woken.clear()
        writer.add_event(sandbox="alpha", kind="log", message="hello")
        wait_for(woken.is_set, timeout=10, what="a NOTIFY after a write")
        assert [e["message"] for e in reader.events_after(0)] == ["hello"]
    finally:
        if listener is not None:
            listener.close()
        reader.close()
        writer.close()


def test_sqlite_cannot_push(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite")
    try:
        assert history.listen(lambda: None) is None
    finally:
        history.close()
