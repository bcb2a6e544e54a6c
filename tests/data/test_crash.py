"""A crash at any point of a clone is healed by the next ensure: the agent killed mid-restore,
a staging copy left behind, a database without its ready marker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg import sql

from sdp_node.naming import STAGING_SUFFIX
from sdp_testbed.dataservers import DataServers
from sdp_testbed.waiting import wait_for
from tests.support.agents import AgentProcess
from tests.support.data import (
    Snapshot,
    drop_database,
    dump_database,
    ensure_db,
    new_password,
    pg_admin,
    pg_login,
)
from tests.support.names import NAMES, PREFIX
from tests.support.plans import run


@pytest.fixture
def big_dump(data_servers: DataServers, tmp_path: Path) -> Iterator[Path]:
    """A dump whose restore takes a few seconds: time to kill the agent in the middle."""
    name = f"{PREFIX}_big_{uuid.uuid4().hex[:6]}"
    with pg_admin(data_servers) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with pg_admin(data_servers, name) as connection:
            connection.execute("CREATE TABLE events AS SELECT g AS id, md5(g::text) AS body "
                               "FROM generate_series(1, 600000) g")
            connection.execute("CREATE INDEX ON events (body)")
            connection.execute("CREATE TABLE accounts (email text)")
            connection.execute("INSERT INTO accounts VALUES ('big-dump-row')")
        path = tmp_path / "big.dump"
        dump_database(data_servers, name, path)
    finally:
        drop_database(data_servers, name)
    yield path


def databases(servers: DataServers) -> set[str]:
    with pg_admin(servers) as admin:
        return {r[0] for r in admin.execute("SELECT datname FROM pg_database")}


def test_an_agent_killed_mid_restore_is_healed_by_the_next_ensure(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    snapshot: Snapshot, big_dump: Path,
) -> None:
    agent = make_infra_agent(sources={"big": {"dump": str(big_dump)}}, restore_jobs=1)
    client = agent.client()
    database = NAMES.database("CRASH", "db")
    staging = database + STAGING_SUFFIX
    password = new_password()
    lease = client.acquire_lease("crash-test", 300)
    client.apply(lease_id=lease.id, steps=[ensure_db("CRASH", password, source="big")],
                 requested_by="crash-test", credentials=None)

    def restoring() -> bool | None:
        with pg_admin(data_servers) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                "application_name = 'sdp-node'", (staging,)).fetchone()
        return True if row and row[0] else None

    wait_for(restoring, what="pg_restore writing into the staging database", timeout=60,
             interval=0.02)
    agent.kill()
    assert staging in databases(data_servers)
    assert database not in databases(data_servers)  # nothing half-made under the real name

    client = agent.start()
    healed = run(client, [ensure_db("CRASH", password, source="big")], None)
    assert healed.ok, healed.last().message
    assert any("left by an interrupted clone" in line for line in healed.logs())
    assert staging not in databases(data_servers)
    with pg_login(data_servers, user=database, password=password, database=database) as c:
        assert c.execute("SELECT email FROM accounts").fetchall() == [("big-dump-row",)]
        assert c.execute("SELECT count(*) FROM events").fetchone() == (600000,)

    def orphans_gone() -> bool | None:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if staging.encode() in cmdline.read_bytes():
                    return None
            except OSError:
                continue
        return True

    wait_for(orphans_gone, what="the killed agent's pg_restore to end", timeout=30)


def test_a_staging_copy_left_by_a_killed_template_copy_is_removed(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    snapshot: Snapshot,
) -> None:
    client = make_infra_agent().client()
    database = NAMES.database("S1", "db")
    password = new_password()
    assert run(client, [ensure_db("S1", password)], None).ok
    with pg_admin(data_servers) as admin:  # what a CREATE DATABASE cut short leaves behind
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(database + STAGING_SUFFIX), sql.Identifier(database)))
    [observed] = client.observe().data_services
    assert observed.problem is not None and "interrupted clone" in observed.problem
    healed = run(client, [ensure_db("S1", password)], None)
    assert healed.ok
    assert database + STAGING_SUFFIX not in databases(data_servers)
    assert client.observe().data_services[0].problem is None


def test_a_database_without_its_ready_marker_is_made_again(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    snapshot: Snapshot,
) -> None:
    client = make_infra_agent().client()
    database = NAMES.database("S1", "db")
    password = new_password()
    assert run(client, [ensure_db("S1", password)], None).ok
    with pg_login(data_servers, user=database, password=password, database=database) as c:
        c.execute("CREATE TABLE half_made (id int)")
    with pg_admin(data_servers) as admin:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(
            sql.Identifier(database)))
    [observed] = client.observe().data_services
    assert observed.state.value == "incomplete"
    healed = run(client, [ensure_db("S1", password)], None)
    assert healed.ok and healed.last().changed
    assert healed.last().data_service is not None
    assert healed.last().data_service.state.value == "ready"
    with pg_login(data_servers, user=database, password=password, database=database) as c:
        assert c.execute("SELECT to_regclass('half_made')").fetchone() == (None,)
        assert snapshot.row in [r[0] for r in c.execute("SELECT email FROM accounts")]
