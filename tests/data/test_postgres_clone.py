"""PostgreSQL clones through a real INFRA agent against the real server: from a template and
from a dump, readable only through the sandbox's own role; re-clone; observe; busy templates."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from sdp_node.naming import STAGING_SUFFIX
from sdp_node.protocol import DataKind, DataSourceKind, DataState, EventName
from sdp_testbed.dataservers import DataServers
from tests.support.agents import AgentProcess
from tests.support.data import (
    Snapshot,
    drop_db,
    ensure_db,
    new_password,
    pg_admin,
    pg_login,
    reclone_db,
)
from tests.support.names import NAMES
from tests.support.plans import run


def accounts(servers: DataServers, database: str, password: str) -> list[str]:
    with pg_login(servers, user=database, password=password, database=database) as connection:
        return [r[0] for r in connection.execute("SELECT email FROM accounts ORDER BY id")]


@pytest.mark.parametrize("source", ["qa-snapshot", "qa-dump"])
def test_a_clone_holds_the_snapshot_and_its_role_owns_it(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    snapshot: Snapshot, source: str,
) -> None:
    client = make_infra_agent().client()
    password = new_password()
    outcome = run(client, [ensure_db("QA-LOGIN-ERROR", password, source=source)], None)
    assert outcome.ok, outcome.last().message
    database = NAMES.database("QA-LOGIN-ERROR", "db")
    assert database == f"{NAMES.prefix}_qa_login_error_db"
    result = outcome.last()
    assert result.changed
    assert result.data_service is not None
    assert result.data_service.state is DataState.READY
    assert result.data_service.source == source
    assert EventName.CLONE_COMPLETED.value in outcome.stage_events()

    assert snapshot.row in accounts(data_servers, database, password)
    with pg_login(data_servers, user=database, password=password, database=database) as c:
        # The role owns what it got, so a branch's migrations can change it.
        c.execute("ALTER TABLE accounts ADD COLUMN migrated boolean")
        c.execute("ALTER TABLE billing.invoices ADD COLUMN note text")
        c.execute("INSERT INTO billing.invoices (amount) VALUES (5)")
        assert c.execute("SELECT account_count()").fetchone() == (101,)
        assert c.execute("SELECT nextval('ticket_numbers')").fetchone() == (1,)
        c.execute("CREATE TABLE made_by_migration (id int)")
    with pg_admin(data_servers) as admin:
        assert admin.execute("SELECT datname FROM pg_database WHERE datname = %s",
                             (database + STAGING_SUFFIX,)).fetchone() is None

    # A second ensure changes nothing and keeps the data.
    again = run(client, [ensure_db("QA-LOGIN-ERROR", password, source=source)], None)
    assert again.ok and not again.last().changed
    with pg_login(data_servers, user=database, password=password, database=database) as c:
        assert c.execute("SELECT count(*) FROM made_by_migration").fetchone() == (0,)


def test_observe_lists_the_clone_with_its_source_state_and_size(
    make_infra_agent: Callable[..., AgentProcess], snapshot: Snapshot,
) -> None:
    client = make_infra_agent().client()
    assert run(client, [ensure_db("S1", new_password())], None).ok
    observation = client.observe()
    assert [s.kind for s in observation.data_servers] == [
        DataKind.POSTGRESQL, DataKind.REDIS, DataKind.RABBITMQ]
    assert all(s.reachable for s in observation.data_servers), observation.data_servers
    assert observation.data_servers[0].version and \
        observation.data_servers[0].version.startswith("15")
    sources = {s.name: s for s in observation.data_sources}
    assert sources["qa-snapshot"].kind is DataSourceKind.TEMPLATE
    assert sources["qa-dump"].kind is DataSourceKind.DUMP and sources["qa-dump"].size_bytes
    assert all(s.problem is None for s in sources.values()), sources
    [service] = observation.data_services
    assert (service.kind, service.name, service.sandbox, service.service, service.source,
            service.state) == (DataKind.POSTGRESQL, NAMES.database("S1", "db"), "S1", "db",
                               "qa-snapshot", DataState.READY)
    assert service.size_bytes and service.size_bytes > 1_000_000
    assert service.spec_hash == "spec-1"
    assert observation.containers == []


def test_reclone_brings_the_snapshot_back_and_keeps_the_password(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    snapshot: Snapshot,
) -> None:
    client = make_infra_agent().client()
    password = new_password()
    database = NAMES.database("S1", "db")
    assert run(client, [ensure_db("S1", password)], None).ok
    with pg_login(data_servers, user=database, password=password, database=database) as c:
        c.execute("DELETE FROM accounts")
    held = pg_login(data_servers, user=database, password=password, database=database)
    outcome = run(client, [reclone_db("S1", password, source="qa-dump")], None)
    assert outcome.ok, outcome.last().message
    assert outcome.last().data_service is not None
    assert outcome.last().data_service.source == "qa-dump"
    assert snapshot.row in accounts(data_servers, database, password)
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")  # the sandbox's session on the old copy was ended
    held.close()


def test_a_wrong_name_or_unknown_source_changes_nothing(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
) -> None:
    client = make_infra_agent().client()
    step = ensure_db("S1", new_password()).model_copy(update={"database": "postgres"})
    outcome = run(client, [step, ensure_db("S2", new_password(), source="nope"),
                           ensure_db("S3", "short")], None)
    messages = [r.message for r in outcome.results]
    assert not any(r.ok for r in outcome.results)
    assert "is not SDP's name" in messages[0]
    assert "offers no PostgreSQL source 'nope'" in messages[1]
    assert "qa-dump, qa-snapshot" in messages[1]
    assert "16-128 printable ASCII" in messages[2]
    with pg_admin(data_servers) as admin:
        assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE %s",
                             (f"{NAMES.prefix}\\_s_\\_db",)).fetchone() == (0,)


def test_a_busy_template_waits_then_names_the_foreign_session_and_leaves_it(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    snapshot: Snapshot,
) -> None:
    client = make_infra_agent(busy_timeout_seconds=1).client()
    with pg_admin(data_servers, snapshot.template) as foreign:
        foreign.execute("SET application_name = 'qa-report-tool'")
        outcome = run(client, [ensure_db("S1", new_password())], None)
        assert not outcome.ok
        message = outcome.last().message
        assert f"template {snapshot.template} is in use" in message
        assert "qa-report-tool" in message
        assert "ALLOW_CONNECTIONS false" in message
        assert foreign.execute("SELECT 1").fetchone() == (1,)  # never ended by SDP
    # Once the session is gone, the same step succeeds.
    assert run(client, [ensure_db("S1", new_password())], None).ok


@pytest.mark.parametrize("source", ["qa-snapshot", "qa-dump"])
def test_drop_is_idempotent_and_reports_what_it_changed(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers, source: str,
) -> None:
    client = make_infra_agent().client()
    # Right after a restore autovacuum is often on the new database: the drop must wait for
    # it, not fail (DROP ... WITH (FORCE) refuses a non-superuser then).
    assert run(client, [ensure_db("S1", new_password(), source=source)], None).ok
    first = run(client, [drop_db("S1")], None)
    second = run(client, [drop_db("S1")], None)
    assert first.ok and first.last().changed and first.last().data_service is None
    assert second.ok and not second.last().changed
    assert client.observe().data_services == []
