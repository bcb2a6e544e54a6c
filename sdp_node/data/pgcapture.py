"""Sources SDP captures from a sandbox's database (``snapshot --data``): make, find, drop.

A captured source is a template database ``ResourceNames.captured_source(NAME)`` (e.g.
``sandbox__src_qa_with_bug``) that later sandboxes clone with ``from: NAME`` exactly like a
template of node.yaml. Promises:

* **SDP's, recognisably**: it is owned by the administrator and its ``COMMENT ON DATABASE`` is
  a marker of this installation and node with ``captured: NAME`` (and the sandbox and entry it
  came from). Only such a database is listed as a captured source or dropped by
  ``drop_captured_source``; a database of that name without the marker is foreign and stops the
  step (``Conflict``), so SDP never drops what it did not make;
* **a new name only**: NAME must not be a source of node.yaml nor an existing database (a
  captured source of that name included): the step is refused before anything is made;
* **the sandbox's role owns nothing in it**: the copy's objects are handed over to the
  administrator and every privilege or default privilege left for the sandbox's role is
  removed (``DROP OWNED`` in the copy only), so the sandbox (role and database) can still be
  dropped, and the copy outlives it;
* **sessions**: PostgreSQL copies only a database nobody is connected to. The sandbox role's
  sessions and SDP's own on the sandbox's database are ended (its containers reconnect);
  a foreign session is waited for up to ``busy_timeout_seconds``, then named, never ended;
* **never half-visible**: the copy is made as ``<template>__sdp_new`` with a ``creating``
  marker, handed over, closed (``ALLOW_CONNECTIONS false``, no ``CONNECT`` for ``PUBLIC``),
  marked ready and only then renamed; a marked leftover copy is removed by the next capture.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import errors, sql

from sdp_node.data.markers import Marker, Owner
from sdp_node.data.pgowner import hand_over
from sdp_node.data.postgres import (
    APPLICATION_NAME,
    Conn,
    DatabaseInfo,
    PgAdmin,
    pg_error,
)
from sdp_node.dataconfig import PostgresServer, PostgresSource
from sdp_node.errors import BadRequest, Conflict, NotFound
from sdp_node.naming import STAGING_SUFFIX, ResourceNames
from sdp_node.protocol import (
    CaptureDatabase,
    DataSourceInfo,
    DataSourceKind,
    DropCapturedSource,
    Stage,
)
from sdp_node.steps import StepContext

RETRY_INTERVAL = 0.2


class Captures:
    def __init__(self, server: PostgresServer, admin: PgAdmin, *, names: ResourceNames,
                 owner: Owner) -> None:
        self.server = server
        self.admin = admin
        self.names = names
        self.owner = owner

    # -- reading ---------------------------------------------------------------------------------

    def _ours(self, database: DatabaseInfo | None, source: str) -> bool:
        marker = database.marker if database is not None else None
        return (database is not None and marker is not None
                and database.owner == self.server.admin_user
                and marker.owned_by(self.owner.instance, self.owner.node)
                and marker.captured == source)

    def listed(self, connection: Conn) -> list[DataSourceInfo]:
        """The complete sources this node captured, as the observation lists them."""
        rows = self.admin.databases_owned_by(connection, [self.server.admin_user])
        out = []
        for database in rows:
            marker = database.marker
            if marker is None or marker.captured is None or not marker.is_ready \
                    or not marker.owned_by(self.owner.instance, self.owner.node) \
                    or database.name != self.names.captured_source(marker.captured):
                continue
            out.append(DataSourceInfo(
                name=marker.captured, kind=DataSourceKind.TEMPLATE, location=database.name,
                size_bytes=database.size_bytes, captured_from=f"{marker.sandbox}/"
                f"{marker.service}", created_at=marker.created))
        return out

    def source(self, connection: Conn, name: str) -> PostgresSource:
        """node.yaml's source ``name``, else the complete source this node captured as it."""
        if name in self.server.sources:
            return self.server.sources[name]
        if self.names.captured_problem(name) is None:
            template = self.names.captured_source(name)
            database = self.admin.database(connection, template)
            if self._ours(database, name) and database is not None \
                    and database.marker is not None and database.marker.is_ready:
                return PostgresSource(template=template)
        known = sorted([*self.server.sources, *(s.name for s in self.listed(connection))])
        raise NotFound(
            f"this node offers no PostgreSQL source {name!r} (it offers: "
            f"{', '.join(known) or 'none'}); sources are listed in the INFRA node's node.yaml "
            "under data.postgresql.sources, or captured with 'sdp-reconcile snapshot --data'"
        )

    # -- capture ---------------------------------------------------------------------------------

    def _check(self, source: str, template: str) -> None:
        problem = self.names.captured_problem(source)
        if problem:
            raise BadRequest(problem)
        expected = self.names.captured_source(source)
        if template != expected:
            raise BadRequest(f"template {template!r} is not SDP's name for captured source "
                             f"{source!r} ({expected!r})")

    def capture(self, step: CaptureDatabase, connection: Conn, context: StepContext) -> bool:
        """Copy the sandbox's (checked, complete) database ``step.database`` into the new source;
        the caller has checked that the database and its role are SDP's."""
        self._check(step.source, step.template)
        if step.source in self.server.sources:
            raise Conflict(f"source {step.source!r} is already one of this node's (node.yaml "
                           "data.postgresql.sources): choose another name")
        template, staging = step.template, step.template + STAGING_SUFFIX
        existing = self.admin.database(connection, template)
        if existing is not None:
            if self._ours(existing, step.source):
                assert existing.marker is not None
                raise Conflict(
                    f"source {step.source!r} exists (captured from {existing.marker.sandbox}/"
                    f"{existing.marker.service} at {existing.marker.created_at}): choose "
                    f"another name, or drop it first (sdp-reconcile drop-source {step.source})")
            raise Conflict(f"a database {template!r} exists and is not a source SDP captured "
                           f"as {step.source!r} (owner {existing.owner}): SDP does not touch it;"
                           " choose another name")
        leftover = self.admin.database(connection, staging)
        if leftover is not None:
            if not self._ours(leftover, step.source):
                raise Conflict(f"a database {staging!r} exists and is not SDP's (owner "
                               f"{leftover.owner}): SDP does not touch it")
            context.log(f"removing {staging}, left by an interrupted capture")
            self.admin.drop_database(connection, staging, role=self.server.admin_user)
        marker = Marker.new(instance=self.owner.instance, node=self.owner.node,
                            sandbox=step.sandbox, service=step.service, source=step.database,
                            captured=step.source)
        with context.stage(Stage.CAPTURE):
            context.log(f"copying {step.database} into {staging}")
            self._copy(connection, step.database, staging=staging, role=step.database,
                       context=context)
            try:
                self.admin.comment_database(connection, staging, marker)
            except psycopg.Error as e:
                raise pg_error(f"marking {staging}", e) from e
            with self.admin.connect(staging) as copy:
                moved = hand_over(copy, self.server.admin_user, admin=self.server.admin_user)
                try:
                    # Grants and default privileges left for the sandbox's role, in the copy
                    # only (it owns nothing here any more): its role stays droppable.
                    copy.execute(sql.SQL("DROP OWNED BY {}").format(
                        sql.Identifier(step.database)))
                except psycopg.Error as e:
                    raise pg_error(f"removing {step.database}'s privileges from {staging}",
                                   e) from e
            context.log(f"{moved} objects handed over to {self.server.admin_user}")
            try:
                name = sql.Identifier(staging)
                connection.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false")
                                   .format(name))
                connection.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM "
                                           "PUBLIC").format(name))
                self.admin.comment_database(connection, staging, marker.ready())
                self.admin.rename_database(connection, staging, template)
            except psycopg.Error as e:
                raise pg_error(f"finishing {staging}", e) from e
            context.log(f"source {step.source} captured from {step.database} as {template}")
        return True

    def _copy(self, connection: Conn, database: str, *, staging: str, role: str,
              context: StepContext) -> None:
        statement = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {} STRATEGY {}").format(
            sql.Identifier(staging), sql.Identifier(self.server.admin_user),
            sql.Identifier(database), sql.SQL(self.server.clone_strategy.value.upper()))
        deadline = time.monotonic() + self.server.busy_timeout_seconds
        while True:
            sessions = self.admin.sessions(connection, database)
            mine = [s for s in sessions if s.user == role or (
                s.user == self.server.admin_user and s.application == APPLICATION_NAME)]
            if mine:
                context.log(f"ending {len(mine)} session(s) of the sandbox on {database}")
                self.admin.terminate(connection, mine)
            try:
                connection.execute(statement)
                return
            except errors.ObjectInUse as e:
                if time.monotonic() >= deadline:
                    foreign = [s for s in self.admin.sessions(connection, database)
                               if s.user != role]
                    named = ", ".join(s.describe() for s in foreign) or "sessions now gone"
                    raise Conflict(f"database {database} is in use ({named}); SDP ends only "
                                   "the sandbox's own sessions: close them and run again") from e
                time.sleep(RETRY_INTERVAL)  # an ended session is going, or a foreign one
            except psycopg.Error as e:
                raise pg_error(f"copying {database}", e) from e

    # -- drop ------------------------------------------------------------------------------------

    def drop(self, step: DropCapturedSource, connection: Conn, context: StepContext) -> bool:
        self._check(step.source, step.template)
        changed = False
        for name in (step.template + STAGING_SUFFIX, step.template):
            database = self.admin.database(connection, name)
            if database is None:
                continue
            if not self._ours(database, step.source):
                raise Conflict(f"database {name!r} is not a source SDP captured as "
                               f"{step.source!r} (owner {database.owner}): SDP does not touch "
                               "it")
            with context.stage(Stage.DROP):
                try:
                    self.admin.drop_database(connection, name, role=self.server.admin_user)
                except psycopg.Error as e:
                    raise pg_error(f"dropping {name}", e) from e
                context.log(f"source {step.source} ({name}) dropped")
            changed = True
        return changed


__all__ = ["Captures"]
