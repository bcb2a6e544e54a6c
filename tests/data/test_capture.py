"""Capturing a sandbox's database as a new source (``snapshot --data``), against the real
server: the copy holds the sandbox's changes, later sandboxes clone it, the sandbox's sessions
are ended for the copy, a foreign one is named and left; a clashing name changes nothing; only
sources SDP captured are dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sdp_node.naming import STAGING_SUFFIX
from sdp_node.protocol import DataSourceKind, DataState
from sdp_testbed.dataservers import DataServers
from tests.support.agents import AgentProcess
from tests.support.data import (
    Snapshot,
    capture_db,
    drop_database,
    drop_db,
    drop_source,
    ensure_db,
    new_password,
    pg_admin,
    pg_login,
)
from tests.support.names import NAMES
from tests.support.plans import run

CHANGED = "changed-by-the-sandbox@example.test"


def ours(servers: DataServers) -> list[str]:
    with pg_admin(servers) as admin:
        return [r[0] for r in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname",
            (NAMES.prefix.replace("-", "\\_") + "\\_%",))]


def emails(servers: DataServers, database: str, password: str) -> list[str]:
    with pg_login(servers, user=database, password=password, database=database) as c:
        return [r[0] for r in c.execute("SELECT email FROM accounts ORDER BY id")]


def test_a_captured_source_holds_the_sandbox_s_change_and_clones_into_a_new_sandbox(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    snapshot: Snapshot,
) -> None:
    client = make_infra_agent().client()
    first, second = new_password(), new_password()
    s1, s2 = NAMES.database("S1", "db"), NAMES.database("S2", "db")
    assert run(client, [ensure_db("S1", first)], None).ok
    with pg_login(data_servers, user=s1, password=first, database=s1) as c:
        c.execute("UPDATE accounts SET email = %s WHERE id = 1", (CHANGED,))
        c.execute("CREATE TABLE made_by_migration (id int)")
    # The sandbox's own open session is ended for the copy (its containers reconnect).
    held = pg_login(data_servers, user=s1, password=first, database=s1)
    held.execute("SELECT 1")

    outcome = run(client, [capture_db("S1", "qa-with-bug")], None)
    assert outcome.ok, outcome.last().message
    assert outcome.last().changed
    assert outcome.last().data_service is not None
    assert outcome.last().data_service.state is DataState.READY  # the sandbox keeps its own
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()

    template = NAMES.captured_source("qa-with-bug")
    assert template == f"{NAMES.prefix.replace('-', '_')}__src_qa_with_bug"
    sources = {s.name: s for s in client.observe().data_sources}
    captured = sources["qa-with-bug"]
    assert (captured.kind, captured.location, captured.captured_from, captured.problem) == (
        DataSourceKind.TEMPLATE, template, "S1/db", None)
    assert captured.size_bytes and captured.created_at is not None
    assert sources["qa-snapshot"].captured_from is None
    with pg_admin(data_servers) as admin:
        owner, connections = admin.execute(
            "SELECT pg_get_userbyid(datdba), datallowconn FROM pg_database WHERE datname = %s",
            (template,)).fetchone() or (None, None)
        assert (owner, connections) == (data_servers.postgresql.admin_user, False)
        assert admin.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')",
                             (s1, template)).fetchone() == (False,)

    # A later sandbox clones it like any template, and owns what it got.
    made = run(client, [ensure_db("S2", second, source="qa-with-bug")], None)
    assert made.ok, made.last().message
    assert made.last().data_service is not None
    assert made.last().data_service.source == "qa-with-bug"
    assert CHANGED in emails(data_servers, s2, second)
    assert snapshot.row in emails(data_servers, s2, second)
    with pg_login(data_servers, user=s2, password=second, database=s2) as c:
        c.execute("ALTER TABLE made_by_migration ADD COLUMN note text")
    # The original sandbox is untouched, and its role can still be dropped.
    assert CHANGED in emails(data_servers, s1, first)
    dropped = run(client, [drop_db("S1")], None)
    assert dropped.ok, dropped.last().message
    with pg_admin(data_servers) as admin:
        assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                             (s1,)).fetchone() is None
    assert "qa-with-bug" in {s.name for s in client.observe().data_sources}

    # Dropping the source: only what SDP captured, once.
    gone = run(client, [drop_source("qa-with-bug"), drop_source("qa-with-bug")], None)
    assert [r.ok for r in gone.results] == [True, True]
    assert [r.changed for r in gone.results] == [True, False]
    assert template not in ours(data_servers)
    assert CHANGED in emails(data_servers, s2, second)  # a clone outlives its source
    unknown = run(client, [ensure_db("S3", new_password(), source="qa-with-bug")], None)
    assert not unknown.ok
    assert "offers no PostgreSQL source 'qa-with-bug'" in unknown.last().message


def test_a_name_clash_is_refused_and_changes_nothing(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
) -> None:
    client = make_infra_agent().client()
    assert run(client, [ensure_db("S1", new_password())], None).ok
    assert run(client, [capture_db("S1", "taken")], None).ok
    foreign = NAMES.captured_source("foreign-x")
    with pg_admin(data_servers) as admin:  # a database of the name, not made by SDP
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(foreign)))
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS 'the DBA keeps this'")
                      .format(sql.Identifier(foreign)))
    try:
        before = ours(data_servers)
        bad_template = capture_db("S1", "other").model_copy(update={"template": "postgres"})
        outcome = run(client, [
            capture_db("S1", "qa-snapshot"), capture_db("S1", "taken"),
            capture_db("S1", "foreign-x"), capture_db("S1", "no such name!"), bad_template,
            capture_db("S9", "fresh"), drop_source("foreign-x"),
        ], None)
        messages = [r.message for r in outcome.results]
        assert not any(r.ok for r in outcome.results), messages
        assert "already one of this node's" in messages[0]
        assert "source 'taken' exists (captured from S1/db" in messages[1]
        assert "drop-source taken" in messages[1]
        assert f"a database {foreign!r} exists and is not a source SDP captured" in messages[2]
        assert "is not a valid name" in messages[3]
        assert "is not SDP's name for captured source 'other'" in messages[4]
        assert "no complete database" in messages[5]
        assert "is not a source SDP captured" in messages[6]
        assert ours(data_servers) == before
        with pg_admin(data_servers) as admin:
            assert admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                                 " WHERE datname = %s", (foreign,)).fetchone() == (
                "the DBA keeps this",)
        assert {s.name for s in client.observe().data_sources if s.captured_from} == {"taken"}
    finally:
        drop_database(data_servers, foreign)


def test_a_foreign_session_on_the_sandbox_database_is_named_and_left(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
) -> None:
    client = make_infra_agent(busy_timeout_seconds=1).client()
    assert run(client, [ensure_db("S1", new_password())], None).ok
    database = NAMES.database("S1", "db")
    with pg_admin(data_servers, database) as foreign:
        foreign.execute("SET application_name = 'qa-report-tool'")
        outcome = run(client, [capture_db("S1", "busy")], None)
        assert not outcome.ok
        message: Any = outcome.last().message
        assert f"database {database} is in use" in message and "qa-report-tool" in message
        assert foreign.execute("SELECT 1").fetchone() == (1,)  # never ended by SDP
    template = NAMES.captured_source("busy")
    assert template not in ours(data_servers)
    assert template + STAGING_SUFFIX not in ours(data_servers)
    assert run(client, [capture_db("S1", "busy")], None).ok  # once it is gone
