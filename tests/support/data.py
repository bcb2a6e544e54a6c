"""What the INFRA tests share: the real data servers, sources they make, agents, clean-up.

The servers are the ones ``.ci/start-data-servers`` runs (``sdp_testbed.dataservers``),
shared with other test runs: every test makes its own installation (its markers), its own
template database and dump, and drops exactly those afterwards: objects whose markers name the
test's installation, and the foreign objects the test made itself. Nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql

from sdp_node.data.markers import Marker, Owner
from sdp_node.data.redisacl import registry_key
from sdp_node.naming import STAGING_SUFFIX
from sdp_node.protocol import (
    CaptureDatabase,
    DropCapturedSource,
    DropDatabase,
    DropRabbitmqVhost,
    DropRedisUser,
    EnsureDatabase,
    EnsureRabbitmqVhost,
    EnsureRedisUser,
    RecloneDatabase,
    Secret,
)
from sdp_testbed.dataservers import PG_BIN, DataServers
from tests.support.agents import AgentProcess
from tests.support.names import NAMES, PREFIX

SNAPSHOT_ROW = "qa-snapshot-row"


def new_password(tag: str = "pw") -> str:
    """A generated-looking password with a marker a canary sweep can look for."""
    return f"SdpCanary{tag}{secrets.token_urlsafe(18)}"


@contextlib.contextmanager
def pg_admin(servers: DataServers, database: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
    server = servers.postgresql
    with psycopg.connect(host=server.host, port=server.port, user=server.admin_user,
                         password=server.admin_password, dbname=database, autocommit=True,
                         application_name="sdp-tests") as connection:
        yield connection


def pg_login(servers: DataServers, *, user: str, password: str, database: str)\
        -> psycopg.Connection[Any]:
    server = servers.postgresql
    return psycopg.connect(host=server.host, port=server.port, user=user, password=password,
                           dbname=database, autocommit=True, connect_timeout=5)


def redis_admin(servers: DataServers, *, socket_timeout: float | None = 5) -> redis.Redis:
    """``socket_timeout=None`` for MONITOR, which waits between commands (redis-py 8 reads
    with a 5 s limit by default and ends the stream after a quiet spell)."""
    server = servers.redis
    return redis.Redis(host=server.host, port=server.port, username=server.admin_user,
                       password=server.admin_password, decode_responses=True,
                       socket_timeout=socket_timeout)


def redis_login(servers: DataServers, *, user: str, password: str) -> redis.Redis:
    return redis.Redis(host=servers.redis.host, port=servers.redis.port, username=user,
                       password=password, decode_responses=True)


def rabbit_admin(servers: DataServers) -> httpx.Client:
    return httpx.Client(base_url=servers.management_url + "/api", trust_env=False,
                        auth=(servers.rabbitmq.admin_user, servers.rabbitmq.admin_password))


def drop_database(servers: DataServers, name: str) -> None:
    with pg_admin(servers) as connection:
        drop_now(connection, name)


def drop_now(connection: psycopg.Connection[Any], name: str) -> None:
    """Drop a database the tests made (or an agent of theirs made): closed to new sessions,
    the sessions the administrator may end ended, then a plain drop (``WITH (FORCE)`` fails
    for a non-superuser while autovacuum is on the database)."""
    if not _exists(connection, name):
        return
    target = sql.Identifier(name)
    connection.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false ALLOW_CONNECTIONS false")
                       .format(target))
    connection.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
        "AND pg_has_role(current_user, usesysid, 'MEMBER')", (name,))
    connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(target))


def _exists(connection: psycopg.Connection[Any], name: str) -> bool:
    return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (name,)).fetchone() is not None


@dataclass(frozen=True)
class Snapshot:
    """A template database the tests clone, and a dump of it."""

    template: str
    dump: Path
    row: str


def make_snapshot(servers: DataServers, folder: Path, *, rows: int = 100) -> Snapshot:
    """A template owned by SDP's administrator (as docs/infra.md says to make one) holding a
    table, a sequence, a view, a function and a type, and the row tests look for."""
    name = f"{PREFIX}_qa_snapshot_{uuid.uuid4().hex[:6]}"
    row = f"{SNAPSHOT_ROW}-{uuid.uuid4().hex[:8]}"
    with pg_admin(servers) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with pg_admin(servers, name) as connection:
        connection.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')")
        connection.execute("CREATE SCHEMA billing")
        connection.execute("CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL, "
                           "mood mood DEFAULT 'ok')")
        connection.execute("CREATE TABLE billing.invoices (id bigint GENERATED ALWAYS AS "
                           "IDENTITY, amount int)")
        connection.execute("CREATE SEQUENCE ticket_numbers")
        connection.execute("CREATE VIEW account_emails AS SELECT email FROM accounts")
        connection.execute("CREATE FUNCTION account_count() RETURNS bigint LANGUAGE sql AS "
                           "'SELECT count(*) FROM accounts'")
        connection.execute("INSERT INTO accounts (email) SELECT 'user' || g || '@qa.invalid' "
                           "FROM generate_series(1, %s) g", (rows,))
        connection.execute("INSERT INTO accounts (email) VALUES (%s)", (row,))
    dump = folder / f"{name}.dump"
    dump_database(servers, name, dump)
    with pg_admin(servers) as connection:
        connection.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(
            sql.Identifier(name)))
    return Snapshot(template=name, dump=dump, row=row)


def dump_database(servers: DataServers, database: str, path: Path) -> None:
    server = servers.postgresql
    env = {"PATH": os.environ["PATH"], "PGHOST": server.host, "PGPORT": str(server.port),
           "PGUSER": server.admin_user, "PGPASSWORD": server.admin_password}
    subprocess.run([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(path), database], env=env,
                   check=True, capture_output=True)


# -- agents ---------------------------------------------------------------------------------------


def data_settings(servers: DataServers, snapshot: Snapshot, **postgresql: Any) -> dict[str, Any]:
    """node.yaml ``data:`` for the test servers (passwords as file references)."""
    return {
        "postgresql": {
            "host": servers.postgresql.host, "port": servers.postgresql.port,
            "admin_user": servers.postgresql.admin_user,
            "admin_password": {"file": str(servers.postgresql.admin_password_file)},
            "sources": {"qa-snapshot": {"template": snapshot.template},
                        "qa-dump": {"dump": str(snapshot.dump)}},
            **postgresql,
        },
        "redis": {
            "host": servers.redis.host, "port": servers.redis.port,
            "admin_user": servers.redis.admin_user,
            "admin_password": {"file": str(servers.redis.admin_password_file)},
        },
        "rabbitmq": {
            "host": servers.rabbitmq.host, "port": servers.rabbitmq.port,
            "management_url": servers.management_url,
            "admin_user": servers.rabbitmq.admin_user,
            "admin_password": {"file": str(servers.rabbitmq.admin_password_file)},
        },
    }


def infra_agent(tmp: Path, *, installation: str, data: dict[str, Any],
                name: str = "infra-1") -> AgentProcess:
    return AgentProcess.create(tmp, name=name, installation=installation, node_type="INFRA",
                               repositories=[], data=data)


# -- steps ----------------------------------------------------------------------------------------


def _id() -> str:
    return uuid.uuid4().hex[:8]


def ensure_db(sandbox: str, password: str, *, service: str = "db", source: str = "qa-snapshot",
              spec_hash: str = "spec-1") -> EnsureDatabase:
    return EnsureDatabase(step_id=_id(), sandbox=sandbox, service=service,
                          database=NAMES.database(sandbox, service), source=source,
                          password=Secret(password), spec_hash=spec_hash)


def reclone_db(sandbox: str, password: str, *, service: str = "db",
               source: str = "qa-snapshot") -> RecloneDatabase:
    return RecloneDatabase(step_id=_id(), sandbox=sandbox, service=service,
                           database=NAMES.database(sandbox, service), source=source,
                           password=Secret(password), spec_hash="spec-1")


def drop_db(sandbox: str, *, service: str = "db") -> DropDatabase:
    return DropDatabase(step_id=_id(), sandbox=sandbox, service=service,
                        database=NAMES.database(sandbox, service))


def capture_db(sandbox: str, source: str, *, service: str = "db") -> CaptureDatabase:
    return CaptureDatabase(step_id=_id(), sandbox=sandbox, service=service,
                           database=NAMES.database(sandbox, service), source=source,
                           template=NAMES.captured_source(source))


def drop_source(source: str, *, sandbox: str = "S1", service: str = "db") -> DropCapturedSource:
    return DropCapturedSource(step_id=_id(), sandbox=sandbox, service=service, source=source,
                              template=NAMES.captured_source(source))


def ensure_cache(sandbox: str, password: str, *, service: str = "cache") -> EnsureRedisUser:
    user = NAMES.redis_user(sandbox, service)
    return EnsureRedisUser(step_id=_id(), sandbox=sandbox, service=service, user=user,
                           key_prefix=user + ":", password=Secret(password), spec_hash="spec-1")


def drop_cache(sandbox: str, *, service: str = "cache") -> DropRedisUser:
    return DropRedisUser(step_id=_id(), sandbox=sandbox, service=service,
                         user=NAMES.redis_user(sandbox, service))


def ensure_queue(sandbox: str, password: str, *, service: str = "queue") -> EnsureRabbitmqVhost:
    vhost = NAMES.rabbitmq_vhost(sandbox, service)
    return EnsureRabbitmqVhost(step_id=_id(), sandbox=sandbox, service=service, vhost=vhost,
                               user=vhost, password=Secret(password), spec_hash="spec-1")


def drop_queue(sandbox: str, *, service: str = "queue") -> DropRabbitmqVhost:
    vhost = NAMES.rabbitmq_vhost(sandbox, service)
    return DropRabbitmqVhost(step_id=_id(), sandbox=sandbox, service=service, vhost=vhost,
                             user=vhost)


# -- clean-up -------------------------------------------------------------------------------------


def cleanup_installation(servers: DataServers, installation: str, nodes: list[str]) -> None:
    """Drop what agents of this test's installation made (found by their markers), on every
    server even when one of them fails; the first failure is raised at the end."""
    failures: list[Exception] = []
    for part in (_cleanup_postgres, _cleanup_redis, _cleanup_rabbitmq):
        try:
            part(servers, installation, nodes)
        except Exception as e:  # keep cleaning the other servers
            failures.append(e)
    if failures:
        raise failures[0]


def _cleanup_postgres(servers: DataServers, installation: str, nodes: list[str]) -> None:
    with pg_admin(servers) as connection:
        roles = connection.execute(
            "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles").fetchall()
        for role, comment in roles:
            marker = Marker.decode(comment)
            if marker is None or marker.instance != installation:
                continue
            for database in (role + STAGING_SUFFIX, role):
                drop_now(connection, database)
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        # Sources the installation captured: owned by the administrator, marked "captured".
        databases = connection.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database").fetchall()
        for database, comment in databases:
            marker = Marker.decode(comment)
            if marker is not None and marker.instance == installation and marker.captured:
                drop_now(connection, database)


def _cleanup_redis(servers: DataServers, installation: str, nodes: list[str]) -> None:
    client = redis_admin(servers)
    try:
        for node in nodes:
            key = registry_key(Owner(installation, node))
            for user in client.hkeys(key):
                client.acl_deluser(user)
                for found in client.scan_iter(match=f"{user}:*"):
                    client.unlink(found)
            client.delete(key)
    finally:
        client.close()


def _cleanup_rabbitmq(servers: DataServers, installation: str, nodes: list[str]) -> None:
    with rabbit_admin(servers) as api:
        for vhost in api.get("/vhosts").json():
            marker = Marker.decode(vhost.get("description"))
            if marker is not None and marker.instance == installation:
                api.delete(f"/users/{vhost['name']}")
                api.delete(f"/vhosts/{vhost['name']}")


__all__ = [
    "SNAPSHOT_ROW", "Snapshot", "cleanup_installation", "data_settings", "drop_cache",
    "drop_database", "drop_db", "drop_now", "drop_queue", "dump_database", "ensure_cache",
    "ensure_db",
    "ensure_queue", "infra_agent", "make_snapshot", "new_password", "pg_admin", "pg_login",
    "rabbit_admin", "reclone_db", "redis_admin", "redis_login",
]
