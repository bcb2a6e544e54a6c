"""SDP never changes or drops a database, role, Redis user or vhost it did not make: foreign
objects with SDP's names or similar ones, and another installation's, are left alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from psycopg import sql

from sdp_node.naming import STAGING_SUFFIX
from sdp_testbed.dataservers import DataServers
from tests.support.agents import AgentProcess
from tests.support.data import (
    drop_cache,
    drop_db,
    drop_now,
    drop_queue,
    ensure_cache,
    ensure_db,
    ensure_queue,
    new_password,
    pg_admin,
    rabbit_admin,
    redis_admin,
)
from tests.support.names import NAMES
from tests.support.plans import run


@contextmanager
def foreign_postgres(servers: DataServers, *, databases: list[str], roles: list[str])\
        -> Iterator[None]:
    with pg_admin(servers) as admin:
        for role in roles:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            admin.execute(sql.SQL("COMMENT ON ROLE {} IS 'the QA team''s'").format(
                sql.Identifier(role)))
        for database in databases:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        yield
    finally:
        with pg_admin(servers) as admin:
            for database in databases:
                drop_now(admin, database)
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def pg_names(servers: DataServers) -> set[str]:
    with pg_admin(servers) as admin:
        return {r[0] for r in admin.execute(
            "SELECT datname FROM pg_database UNION ALL SELECT rolname FROM pg_roles")}


def test_foreign_postgres_objects_with_sdps_names_stop_the_step_and_stay(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
) -> None:
    client = make_infra_agent().client()
    taken_db, taken_staging, taken_role = (NAMES.database(s, "db") for s in ("F1", "F2", "F3"))
    with foreign_postgres(data_servers, databases=[taken_db, taken_staging + STAGING_SUFFIX],
                          roles=[taken_role]):
        outcome = run(client, [ensure_db("F1", new_password()), ensure_db("F2", new_password()),
                               ensure_db("F3", new_password()), drop_db("F1"), drop_db("F3")],
                      None)
        assert [r.ok for r in outcome.results] == [False] * 5
        messages = [r.message for r in outcome.results]
        assert f"database {taken_db!r} exists and is not SDP's" in messages[0]
        assert f"{taken_staging + STAGING_SUFFIX!r} exists and is not SDP's" in messages[1]
        assert f"role {taken_role!r} exists and is not this node's (has no SDP marker)" \
            in messages[2]
        assert "SDP does not touch it" in messages[3] and "SDP does not touch it" in messages[4]
        names = pg_names(data_servers)
        assert {taken_db, taken_staging + STAGING_SUFFIX, taken_role} <= names
        assert taken_staging not in names  # F2: no role or database was made either
        with pg_admin(data_servers) as admin:
            comment = admin.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
                                    "WHERE rolname = %s", (taken_role,)).fetchone()
        assert comment == ("the QA team's",)
        assert client.observe().data_services == []


def test_similar_names_survive_a_sandboxs_drop(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
) -> None:
    client = make_infra_agent().client()
    database, user = NAMES.database("H", "db"), NAMES.redis_user("H", "cache")
    vhost = NAMES.rabbitmq_vhost("H", "queue")
    similar_db, similar_role = database + "_copy", database + "_ro"
    admin_redis = redis_admin(data_servers)
    with foreign_postgres(data_servers, databases=[similar_db], roles=[similar_role]), \
            rabbit_admin(data_servers) as api:
        admin_redis.execute_command("ACL", "SETUSER", user + "x", "on", "nopass", "~*", "+get")
        admin_redis.set(user + "x:kept", "v")  # similar prefix, without the ':' boundary
        api.put(f"/vhosts/{vhost}-old", json={"description": "the QA team's"})
        try:
            password = new_password()
            steps = [ensure_db("H", password), ensure_cache("H", password),
                     ensure_queue("H", password), drop_db("H"), drop_cache("H"),
                     drop_queue("H")]
            outcome = run(client, steps, None)
            assert outcome.ok, [r.message for r in outcome.results]
            assert {similar_db, similar_role} <= pg_names(data_servers)
            assert database not in pg_names(data_servers)
            assert user + "x" in admin_redis.acl_users()
            assert admin_redis.get(user + "x:kept") == "v"
            assert api.get(f"/vhosts/{vhost}-old").status_code == 200
            assert api.get(f"/vhosts/{vhost}").status_code == 404
        finally:
            admin_redis.acl_deluser(user + "x")
            admin_redis.delete(user + "x:kept")
            admin_redis.close()
            api.delete(f"/vhosts/{vhost}-old")


def test_a_foreign_redis_user_and_rabbitmq_vhost_with_sdps_names_stay(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
) -> None:
    client = make_infra_agent().client()
    user, vhost = NAMES.redis_user("F", "cache"), NAMES.rabbitmq_vhost("F", "queue")
    other_user = NAMES.rabbitmq_vhost("G", "queue")
    admin_redis = redis_admin(data_servers)
    admin_redis.execute_command("ACL", "SETUSER", user, "on", "nopass", "~*", "+get")
    admin_redis.set(user + ":theirs", "v")
    with rabbit_admin(data_servers) as api:
        api.put(f"/vhosts/{vhost}", json={"description": "the QA team's"})
        api.put(f"/users/{other_user}", json={"password": "their-password-1", "tags": ""})
        try:
            outcome = run(client, [ensure_cache("F", new_password()), drop_cache("F"),
                                   ensure_queue("F", new_password()), drop_queue("F"),
                                   ensure_queue("G", new_password())], None)
            assert [r.ok for r in outcome.results] == [False] * 5
            messages = [r.message for r in outcome.results]
            assert "is not in SDP's registry" in messages[0] and messages[0] == messages[1]
            assert f"vhost {vhost!r} exists and is not this node's" in messages[2]
            assert f"user {other_user!r} exists and is not this node's" in messages[4]
            assert user in admin_redis.acl_users()
            assert admin_redis.get(user + ":theirs") == "v"
            assert api.get(f"/vhosts/{vhost}").json()["description"] == "the QA team's"
            assert api.get(f"/users/{other_user}").status_code == 200
            assert api.get(f"/vhosts/{other_user}").status_code == 404  # G made nothing
        finally:
            admin_redis.acl_deluser(user)
            admin_redis.delete(user + ":theirs")
            admin_redis.close()
            api.delete(f"/vhosts/{vhost}")
            api.delete(f"/users/{other_user}")


def test_another_installation_on_the_same_servers_is_foreign(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers,
    data_installation: str,
) -> None:
    ours = make_infra_agent().client()
    theirs = make_infra_agent(name="infra-2").client()  # another node: markers differ
    password = new_password()
    made = run(theirs, [ensure_db("S1", password), ensure_cache("S1", password),
                        ensure_queue("S1", password)], None)
    assert made.ok, [r.message for r in made.results]
    assert ours.observe().data_services == []
    assert len(theirs.observe().data_services) == 3
    refused = run(ours, [drop_db("S1"), drop_cache("S1"), drop_queue("S1"),
                         ensure_db("S1", new_password())], None)
    assert not any(r.ok for r in refused.results)
    assert "belongs to SDP installation" in refused.results[0].message
    assert "node 'infra-2'" in refused.results[0].message
    assert len(theirs.observe().data_services) == 3
    assert NAMES.database("S1", "db") in pg_names(data_servers)


@pytest.mark.parametrize("marker", ["sdp:v1 not json", "sdp:v1 {\"instance\": 3}"])
def test_a_damaged_marker_is_foreign(
    make_infra_agent: Callable[..., AgentProcess], data_servers: DataServers, marker: str,
) -> None:
    client = make_infra_agent().client()
    role = NAMES.database("D", "db")
    with foreign_postgres(data_servers, databases=[], roles=[role]):
        with pg_admin(data_servers) as admin:
            admin.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
                sql.Identifier(role), sql.Literal(marker)))
        outcome = run(client, [drop_db("D")], None)
        assert not outcome.ok and "has no SDP marker" in outcome.last().message
        assert role in pg_names(data_servers)
