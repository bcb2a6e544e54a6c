"""PostgreSQL as SDP's administrator role sees it: connections, what exists, and who owns it.

Responsible for every query the agent makes about roles and databases, and for the small
writes that are not cloning (roles, comments, renames, drops). Promises:

* the agent connects as the configured administrator (a role with ``CREATEDB`` and
  ``CREATEROLE`` suffices; no superuser needed), with ``application_name=sdp-node``, the
  password from node.yaml's reference and never in a connection string or argv;
* SQL is composed with ``psycopg.sql`` identifiers and literals, never by string formatting;
  a password reaches the server only as a SCRAM verifier (``hashing.scram_sha256``);
* a role is SDP's when its ``COMMENT ON ROLE`` is a marker of this installation and node; a
  database is SDP's when it is owned by such a role. Everything else is foreign: read, named
  in errors, never changed;
* psycopg's errors become ``NodeError``s here (``raise ... from e``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, TypeAlias

import psycopg
from msgspec import Struct
from psycopg import errors, sql

from sdp_node.data.markers import Marker
from sdp_node.dataconfig import PostgresServer
from sdp_node.errors import Conflict, NodeError
from sdp_node.protocol import DataSourceInfo

APPLICATION_NAME = "sdp-node"
DROP_TIMEOUT = 10
Conn: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"


class DataServerError(NodeError):
    status = 502
    code = "data_server"


class RoleInfo(Struct, frozen=True):
    name: str
    marker: Marker | None


class DatabaseInfo(Struct, frozen=True):
    name: str
    owner: str
    marker: Marker | None
    size_bytes: int | None


class Session(Struct, frozen=True):
    pid: int
    user: str | None
    application: str | None

    def describe(self) -> str:
        return f"pid {self.pid} (user {self.user or '?'}, application {self.application or '?'})"


def pg_error(what: str, error: psycopg.Error) -> DataServerError:
    """A psycopg error as a NodeError: what SDP was doing and the server's own words."""
    detail = getattr(error, "diag", None)
    primary = detail.message_primary if detail is not None and detail.message_primary else None
    return DataServerError(f"PostgreSQL: {what}: {primary or str(error).strip()}")


class PgAdmin:
    """SDP's administrator connection to one PostgreSQL server."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    @contextlib.contextmanager
    def connect(self, database: str | None = None) -> Iterator[Conn]:
        try:
            connection = psycopg.connect(
                host=self.server.host, port=self.server.port, user=self.server.admin_user,
                password=self.server.admin_password.read().reveal(),
                dbname=database or self.server.admin_database,
                connect_timeout=max(1, int(self.server.connect_timeout_seconds)),
                application_name=APPLICATION_NAME, autocommit=True,
            )
        except psycopg.Error as e:
            raise pg_error(
                f"cannot connect to {self.server.host}:{self.server.port} as "
                f"{self.server.admin_user}", e,
            ) from e
        try:
            yield connection
        finally:
            connection.close()

    # -- reading ---------------------------------------------------------------------------------

    @staticmethod
    def version(connection: Conn) -> str:
        row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    @staticmethod
    def role(connection: Conn, name: str) -> RoleInfo | None:
        row = connection.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
            (name,),
        ).fetchone()
        return None if row is None else RoleInfo(name, Marker.decode(row[0]))

    @staticmethod
    def database(connection: Conn, name: str) -> DatabaseInfo | None:
        row = connection.execute(
            "SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'), "
            "CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END "
            "FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is None:
            return None
        return DatabaseInfo(name, str(row[0]), Marker.decode(row[1]), row[2])

    @staticmethod
    def marked_roles(connection: Conn) -> list[RoleInfo]:
        rows = connection.execute(
            "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
            "WHERE shobj_description(oid, 'pg_authid') LIKE 'sdp:v1 %' ORDER BY rolname"
        ).fetchall()
        return [RoleInfo(str(name), Marker.decode(text)) for name, text in rows]

    @staticmethod
    def databases_owned_by(connection: Conn, roles: list[str])\
            -> list[DatabaseInfo]:
        rows = connection.execute(
            "SELECT datname, pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'), "
            "CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END "
            "FROM pg_database WHERE pg_get_userbyid(datdba) = ANY(%s) ORDER BY datname",
            (roles,),
        ).fetchall()
        return [DatabaseInfo(str(n), str(o), Marker.decode(c), s) for n, o, c, s in rows]

    @staticmethod
    def sessions(connection: Conn, database: str) -> list[Session]:
        """Client sessions on ``database`` (not autovacuum, which a drop cancels itself)."""
        rows = connection.execute(
            "SELECT pid, usename, application_name FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            (database,),
        ).fetchall()
        return [Session(int(pid), user, app or None) for pid, user, app in rows]

    def source_info(self, connection: Conn, name: str) -> DataSourceInfo:
        source = self.server.sources[name]
        if source.dump is not None:
            path = source.dump
            size = path.stat().st_size if path.is_file() else None
            problem = None if size is not None else f"dump file {path} does not exist"
            return DataSourceInfo(name=name, kind=source.kind, location=str(path),
                                  size_bytes=size, problem=problem)
        row = connection.execute(
            "SELECT datistemplate, pg_get_userbyid(datdba) = current_user, "
            "CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END "
            "FROM pg_database WHERE datname = %s",
            (source.template,),
        ).fetchone()
        problem = None
        if row is None:
            problem = f"no database {source.template!r} on the server"
        elif not row[0] and not row[1]:
            problem = (f"{self.server.admin_user} may not copy {source.template!r}: mark it "
                       f"ALTER DATABASE {source.template} IS_TEMPLATE true, or make "
                       f"{self.server.admin_user} its owner")
        return DataSourceInfo(name=name, kind=source.kind, location=source.location,
                              size_bytes=row[2] if row else None, problem=problem)

    # -- writing ---------------------------------------------------------------------------------

    @staticmethod
    def create_role(connection: Conn, name: str, *, verifier: str,
                    marker: Marker) -> None:
        """The role, its marker and the administrator's membership, in one transaction: a
        role of SDP's name never exists without its marker."""
        role = sql.Identifier(name)
        with connection.transaction():
            connection.execute(sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}").format(role, sql.Literal(verifier)))
            connection.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
                role, sql.Literal(marker.encode())))
            # Membership lets the administrator create databases owned by the role, hand
            # objects over to it, and end its sessions before a drop.
            connection.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))

    @staticmethod
    def set_password(connection: Conn, name: str, verifier: str) -> None:
        connection.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(verifier)))

    @staticmethod
    def comment_database(connection: Conn, name: str, marker: Marker)\
            -> None:
        connection.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(marker.encode())))

    def drop_database(self, connection: Conn, name: str, *, role: str) -> None:
        """Drop ``name`` after closing it to new sessions and ending the sandbox role's and
        SDP's own; a foreign session there is waited for a little, then named, never ended.

        Not ``DROP ... WITH (FORCE)``: for a non-superuser it fails outright when an
        autovacuum worker is on the database (PostgreSQL 15 checks the worker's role), which
        it is right after a restore; a plain drop cancels autovacuum by itself.
        """
        if self.database(connection, name) is None:
            return
        target = sql.Identifier(name)
        connection.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(target))
        mine = {self.server.admin_user, role}
        deadline = time.monotonic() + DROP_TIMEOUT
        while True:
            sessions = self.sessions(connection, name)
            self.terminate(connection, [s for s in sessions if s.user in mine])
            try:
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(target))
                return
            except errors.ObjectInUse as e:
                foreign = [s for s in self.sessions(connection, name) if s.user not in mine]
                if time.monotonic() >= deadline:
                    named = ", ".join(s.describe() for s in foreign) or "sessions now gone"
                    raise Conflict(f"database {name} is in use ({named}); SDP never ends "
                                   "other roles' sessions: close them and run again") from e
                time.sleep(0.1)  # a session SDP just ended, or a foreign one, is going away

    @staticmethod
    def rename_database(connection: Conn, old: str, new: str) -> None:
        connection.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(old), sql.Identifier(new)))

    @staticmethod
    def drop_role(connection: Conn, name: str) -> None:
        connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    @staticmethod
    def terminate(connection: Conn, sessions: list[Session]) -> None:
        for session in sessions:
            connection.execute("SELECT pg_terminate_backend(%s)", (session.pid,))


__all__ = ["APPLICATION_NAME", "DataServerError", "DatabaseInfo", "PgAdmin", "RoleInfo",
           "Session", "pg_error"]
