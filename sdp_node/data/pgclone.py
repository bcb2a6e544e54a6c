"""A sandbox's PostgreSQL database: ensure (clone once), re-clone, drop, observe.

Promises, on top of ``postgres.PgAdmin``'s:

* **one name, one owner**: the database and its role are both ``ResourceNames.database`` (e.g.
  ``sandbox_qa_login_error_db``); the role owns the database and every object in it, and the
  database's ``CONNECT``/``TEMPORARY`` are revoked from ``PUBLIC``, so only that role (and
  SDP's administrator) can reach it;
* **a clone is never half-visible**: it is made under ``<name>__sdp_new`` (owned by the
  sandbox's role from its first moment, so it is recognisably SDP's), handed over, marked
  ``ready`` in its ``COMMENT ON DATABASE`` and only then renamed; a crash at any point leaves
  either nothing under the real name or a complete database, plus perhaps a staging copy that
  the next ensure, re-clone or drop removes. A database under the real name without a ready
  marker (made some other way) is re-made by the next ensure;
* **templates**: ``CREATE DATABASE ... TEMPLATE`` needs the template free of sessions. SDP's
  own sessions there are ended; foreign ones are waited for up to ``busy_timeout_seconds`` and
  then named in the error, never ended (docs/infra.md: mark the template ``ALLOW_CONNECTIONS
  false``);
* **dumps**: ``pg_restore --no-owner --no-privileges --role=<role>`` into an empty database,
  with the administrator's password in the child's environment (never argv) and nothing else
  of the agent's environment;
* **foreign objects**: a role, database or staging database of SDP's name that is not SDP's
  (see ``postgres``) stops the step with ``Conflict`` and is left alone.
"""

from __future__ import annotations

import os
import subprocess
import time

import psycopg
from psycopg import errors, sql

from sdp_node.data.checks import check_names
from sdp_node.data.hashing import check_password, scram_sha256
from sdp_node.data.markers import Marker, Owner
from sdp_node.data.pgcapture import Captures
from sdp_node.data.pgowner import hand_over
from sdp_node.data.postgres import (
    APPLICATION_NAME,
    Conn,
    DatabaseInfo,
    DataServerError,
    PgAdmin,
    RoleInfo,
    pg_error,
)
from sdp_node.dataconfig import PostgresServer, PostgresSource
from sdp_node.errors import BadRequest, Conflict
from sdp_node.naming import STAGING_SUFFIX, ResourceNames
from sdp_node.protocol import (
    CaptureDatabase,
    DataKind,
    DataServerInfo,
    DataSourceInfo,
    DataState,
    DropCapturedSource,
    DropDatabase,
    EnsureDatabase,
    ObservedDataService,
    RecloneDatabase,
    Stage,
)
from sdp_node.steps import StepContext

RETRY_INTERVAL = 0.2
OUTPUT_LINES = 40


class PostgresData:
    def __init__(self, server: PostgresServer, *, names: ResourceNames, owner: Owner) -> None:
        self.server = server
        self.admin = PgAdmin(server)
        self.names = names
        self.owner = owner
        self.captures = Captures(server, self.admin, names=names, owner=owner)

    # -- observe ---------------------------------------------------------------------------------

    def observe(self) -> tuple[DataServerInfo, list[DataSourceInfo], list[ObservedDataService]]:
        info = DataServerInfo(kind=DataKind.POSTGRESQL, host=self.server.container_host,
                              port=self.server.container_port, reachable=False)
        try:
            with self.admin.connect() as connection:
                version = self.admin.version(connection)
                sources = [self.admin.source_info(connection, n) for n in sorted(
                    self.server.sources)] + self.captures.listed(connection)
                services = self._services(connection)
        except (DataServerError, psycopg.Error) as e:
            return info.model_copy(update={"problem": str(e)}), [], []
        return info.model_copy(update={"reachable": True, "version": version}), sources, services

    def _services(self, connection: Conn) -> list[ObservedDataService]:
        roles = [r for r in self.admin.marked_roles(connection)
                 if r.marker is not None and r.marker.owned_by(self.owner.instance,
                                                               self.owner.node)]
        databases = {d.name: d for d in self.admin.databases_owned_by(
            connection, [r.name for r in roles])}
        return [self._observed(role, databases.get(role.name),
                               staging=role.name + STAGING_SUFFIX in databases)
                for role in roles]

    def _observed(self, role: RoleInfo, database: DatabaseInfo | None, *, staging: bool)\
            -> ObservedDataService:
        assert role.marker is not None
        marker = database.marker if database is not None else None
        ready = (database is not None and marker is not None and marker.is_ready
                 and marker.owned_by(self.owner.instance, self.owner.node))
        problem = None
        if database is None:
            problem = "the role exists but its database does not"
        elif not ready:
            problem = "the database has no ready marker (a clone that did not finish)"
        if staging:
            problem = (problem + "; " if problem else "") + \
                f"a staging copy {role.name}{STAGING_SUFFIX} is left from an interrupted clone"
        return ObservedDataService(
            kind=DataKind.POSTGRESQL, name=role.name, user=role.name,
            sandbox=role.marker.sandbox, service=role.marker.service,
            source=marker.source if marker else None,
            state=DataState.READY if ready else DataState.INCOMPLETE,
            spec_hash=marker.spec_hash if marker else None,
            size_bytes=database.size_bytes if database else None,
            created_at=(marker or role.marker).created, problem=problem,
        )

    # -- checks ----------------------------------------------------------------------------------

    def _check_names(self, sandbox: str, service: str, database: str) -> None:
        check_names("database", sandbox=sandbox, service=service, given=database,
                    expected=self.names.database(sandbox, service))
        problem = self.names.data_problem(sandbox, service)
        if problem:
            raise BadRequest(problem)

    def _own_role(self, connection: Conn, name: str, sandbox: str, service: str)\
            -> RoleInfo | None:
        role = self.admin.role(connection, name)
        if role is None:
            return None
        marker = role.marker
        if marker is None or not marker.owned_by(self.owner.instance, self.owner.node):
            whose = "has no SDP marker" if marker is None else \
                f"belongs to SDP installation {marker.instance!r} node {marker.node!r}"
            raise Conflict(f"PostgreSQL role {name!r} exists and is not this node's ({whose}): "
                           "SDP does not touch it")
        if (marker.sandbox, marker.service) != (sandbox, service):
            raise Conflict(f"PostgreSQL role {name!r} belongs to sandbox {marker.sandbox!r} "
                           f"entry {marker.service!r}: two entries map to one name")
        return role

    def _own_database(self, connection: Conn, name: str, role: str, *, exists_role: bool)\
            -> DatabaseInfo | None:
        database = self.admin.database(connection, name)
        if database is not None and (database.owner != role or not exists_role):
            raise Conflict(f"PostgreSQL database {name!r} exists and is not SDP's (owner "
                           f"{database.owner}): SDP does not touch it")
        return database

    # -- steps -----------------------------------------------------------------------------------

    def ensure(self, step: EnsureDatabase | RecloneDatabase, context: StepContext)\
            -> tuple[bool, ObservedDataService]:
        """Ensure (clone unless a complete one exists) or re-clone; (changed, state after)."""
        self._check_names(step.sandbox, step.service, step.database)
        password = check_password(step.password)
        name, staging = step.database, step.database + STAGING_SUFFIX
        with self.admin.connect() as connection:
            source = self.captures.source(connection, step.source)
            role = self._own_role(connection, name, step.sandbox, step.service)
            database = self._own_database(connection, name, name, exists_role=role is not None)
            leftover = self._own_database(connection, staging, name, exists_role=role is not None)
            changed = self._ensure_role(connection, name, password, role is None, step, context)
            if leftover is not None:
                context.log(f"removing {staging}, left by an interrupted clone")
                self._drop(connection, staging, name)
            complete = (database is not None and database.marker is not None
                        and database.marker.is_ready)
            if isinstance(step, EnsureDatabase) and complete:
                assert database is not None and database.marker is not None
                self._restamp(connection, database, step, context)
                return changed, self._state(connection, name)
            if database is not None and not complete and isinstance(step, EnsureDatabase):
                context.log(f"{name} has no ready marker (an unfinished clone): making it again")
                self._drop(connection, name, name)
                database = None
            marker = Marker.new(instance=self.owner.instance, node=self.owner.node,
                                sandbox=step.sandbox, service=step.service)
            with context.stage(Stage.CLONE):
                self._clone(connection, source, staging=staging, role=name, context=context)
                self._finish(connection, staging, marker.ready(spec_hash=step.spec_hash,
                                                               source=step.source))
                if database is not None:
                    context.log(f"dropping the previous {name}")
                    self._drop(connection, name, name)
                self.admin.rename_database(connection, staging, name)
                context.log(f"{name} is ready (from {step.source})")
            return True, self._state(connection, name)

    def _ensure_role(self, connection: Conn, name: str, password: str, create: bool,
                     step: EnsureDatabase | RecloneDatabase, context: StepContext) -> bool:
        verifier = scram_sha256(password)
        try:
            if create:
                marker = Marker.new(instance=self.owner.instance, node=self.owner.node,
                                    sandbox=step.sandbox, service=step.service).ready()
                self.admin.create_role(connection, name, verifier=verifier, marker=marker)
                context.log(f"role {name} created")
                return True
            self.admin.set_password(connection, name, verifier)
            return False
        except psycopg.Error as e:
            raise pg_error(f"creating or updating role {name}", e) from e

    def _restamp(self, connection: Conn, database: DatabaseInfo, step: EnsureDatabase,
                 context: StepContext) -> None:
        marker = database.marker
        assert marker is not None
        if marker.source != step.source:
            context.log(f"{database.name} was cloned from {marker.source}, not {step.source}: "
                        "it is kept (re-clone it to switch sources)")
        if marker.spec_hash != step.spec_hash:
            self.admin.comment_database(connection, database.name,
                                        marker.ready(spec_hash=step.spec_hash))
        context.log(f"{database.name} exists; its role's password is set")

    def _clone(self, connection: Conn, source: PostgresSource, *, staging: str, role: str,
               context: StepContext) -> None:
        if source.template is not None:
            context.log(f"copying template {source.template} into {staging} "
                        f"({self.server.clone_strategy.value})")
            self._copy_template(connection, source.template, staging=staging, role=role,
                                context=context)
            with self.admin.connect(staging) as clone:
                moved = hand_over(clone, role, admin=self.server.admin_user)
            context.log(f"{moved} objects handed over to {role}")
        else:
            assert source.dump is not None
            self._create_empty(connection, staging, role)
            self._restore(source, staging=staging, role=role, context=context)

    def _copy_template(self, connection: Conn, template: str, *, staging: str, role: str,
                       context: StepContext) -> None:
        statement = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {} STRATEGY {}").format(
            sql.Identifier(staging), sql.Identifier(role), sql.Identifier(template),
            sql.SQL(self.server.clone_strategy.value.upper()))
        deadline = time.monotonic() + self.server.busy_timeout_seconds
        while True:
            try:
                connection.execute(statement)
                return
            except errors.ObjectInUse as e:
                sessions = self.admin.sessions(connection, template)
                own = [s for s in sessions if s.user == self.server.admin_user
                       and s.application == APPLICATION_NAME]
                foreign = [s for s in sessions if s not in own]
                if own:
                    context.log(f"ending {len(own)} session(s) of SDP's own on {template}")
                    self.admin.terminate(connection, own)
                elif time.monotonic() >= deadline:
                    named = ", ".join(s.describe() for s in foreign) or "sessions now gone"
                    raise Conflict(
                        f"template {template} is in use ({named}); SDP never ends other "
                        f"sessions: close them, or keep the template free with ALTER DATABASE "
                        f"{template} ALLOW_CONNECTIONS false (docs/infra.md)"
                    ) from e
                time.sleep(RETRY_INTERVAL)  # foreign sessions: wait a little for them to end
            except psycopg.Error as e:
                raise pg_error(f"copying template {template}", e) from e

    def _create_empty(self, connection: Conn, staging: str, role: str) -> None:
        try:
            connection.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(staging), sql.Identifier(role)))
        except psycopg.Error as e:
            raise pg_error(f"creating {staging}", e) from e

    def _restore(self, source: PostgresSource, *, staging: str, role: str,
                 context: StepContext) -> None:
        assert source.dump is not None
        if not source.dump.is_file():
            raise DataServerError(f"dump file {source.dump} does not exist on this node")
        command = [str(self.server.bin_dir / "pg_restore"), "--no-owner", "--no-privileges",
                   f"--role={role}", "--exit-on-error", f"--jobs={self.server.restore_jobs}",
                   f"--dbname={staging}", str(source.dump)]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "PGHOST": self.server.host, "PGPORT": str(self.server.port),
            "PGUSER": self.server.admin_user,
            "PGPASSWORD": self.server.admin_password.read().reveal(),
            "PGAPPNAME": APPLICATION_NAME,
            "PGCONNECT_TIMEOUT": str(max(1, int(self.server.connect_timeout_seconds))),
        }
        context.log(f"restoring {source.dump.name} into {staging} with pg_restore")
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=self.server.restore_timeout_seconds, check=False)
        except FileNotFoundError as e:
            raise DataServerError(f"pg_restore is not at {command[0]} (node.yaml "
                                  "data.postgresql.bin_dir; apt-get install postgresql)") from e
        except subprocess.TimeoutExpired as e:
            raise DataServerError(f"pg_restore took longer than "
                                  f"{self.server.restore_timeout_seconds:.0f} s") from e
        for line in done.stderr.splitlines()[-OUTPUT_LINES:]:
            context.log(f"pg_restore: {line}")
        if done.returncode != 0:
            raise DataServerError(f"pg_restore of {source.dump} failed (exit {done.returncode})")

    def _finish(self, connection: Conn, staging: str, marker: Marker) -> None:
        """Close the clone to everyone but its role, then write the ready marker: last."""
        try:
            connection.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC")
                               .format(sql.Identifier(staging)))
            self.admin.comment_database(connection, staging, marker)
        except psycopg.Error as e:
            raise pg_error(f"finishing {staging}", e) from e

    def _drop(self, connection: Conn, name: str, role: str) -> None:
        try:
            self.admin.drop_database(connection, name, role=role)
        except psycopg.Error as e:
            raise pg_error(f"dropping {name}", e) from e

    def _state(self, connection: Conn, name: str) -> ObservedDataService:
        role = self.admin.role(connection, name)
        assert role is not None
        database = self.admin.database(connection, name)
        staging = self.admin.database(connection, name + STAGING_SUFFIX) is not None
        return self._observed(role, database, staging=staging)

    def capture(self, step: CaptureDatabase, context: StepContext)\
            -> tuple[bool, ObservedDataService]:
        """Copy the sandbox's complete database into a new source (``pgcapture``); the
        sandbox's database as it is left, unchanged."""
        self._check_names(step.sandbox, step.service, step.database)
        with self.admin.connect() as connection:
            role = self._own_role(connection, step.database, step.sandbox, step.service)
            database = self._own_database(connection, step.database, step.database,
                                          exists_role=role is not None)
            if role is None or database is None or database.marker is None \
                    or not database.marker.is_ready:
                raise Conflict(f"sandbox {step.sandbox!r} entry {step.service!r} has no "
                               f"complete database {step.database} on this node to capture")
            changed = self.captures.capture(step, connection, context)
            return changed, self._state(connection, step.database)

    def drop_source(self, step: DropCapturedSource, context: StepContext) -> bool:
        with self.admin.connect() as connection:
            return self.captures.drop(step, connection, context)

    def drop(self, step: DropDatabase, context: StepContext) -> bool:
        """Drop the database, a staging copy and the role, if they are SDP's; role last, so
        an interrupted drop is still observed (and finished by the next one)."""
        self._check_names(step.sandbox, step.service, step.database)
        name = step.database
        with self.admin.connect() as connection:
            role = self._own_role(connection, name, step.sandbox, step.service)
            changed = False
            for database in (name + STAGING_SUFFIX, name):
                found = self._own_database(connection, database, name,
                                           exists_role=role is not None)
                if found is not None:
                    with context.stage(Stage.DROP):
                        self._drop(connection, database, name)
                        context.log(f"database {database} dropped")
                    changed = True
            if role is not None:
                try:
                    self.admin.drop_role(connection, name)
                except psycopg.Error as e:
                    raise pg_error(f"dropping role {name}", e) from e
                context.log(f"role {name} dropped")
                changed = True
        return changed


__all__ = ["PostgresData"]
