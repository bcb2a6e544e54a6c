"""Where the history lives, and the two databases it can live in: the seam under ``History``.

``history.History`` is written once, in SQLite's dialect (``?`` placeholders, its DDL); a
``Backend`` runs that SQL on one database:

* ``SqliteBackend``: one file, one connection behind a lock, WAL so several processes of one
  host share it; its schema version is ``PRAGMA user_version``. Readers find new rows by
  polling (``listen`` returns None).
* ``PostgresBackend``: a PostgreSQL database shared by reconcilers and pages on any host,
  through a ``psycopg_pool`` connection pool. SQL is translated (``?`` -> ``%s``, ``%`` ->
  ``%%``, the reserved column name ``user`` quoted; DDL: identity ids, no foreign keys, as
  SQLite does not enforce them either); its schema version is the table ``schema_version``,
  migrated under an advisory lock so two hosts starting at once migrate once. Every write
  transaction ends with ``NOTIFY sdp_history`` (delivered at commit); ``listen`` wakes a
  page's hub on it, so no page polls.

``Location`` is what ``--history`` / ``SDP_HISTORY`` say: a file path, ``sqlite:///PATH`` or
``postgresql://USER@HOST:PORT/DB``. The PostgreSQL password comes from the environment
(``PGPASSWORD``, or the variable named by ``?password_env=NAME``), from a file
(``?password_file=PATH``), or in the URL only when the URL itself came from the environment:
a password on the command line is refused, since every process of the host can read argv.
Every password is registered with ``redaction.SECRETS`` the moment it is read, so no log line,
error or history row can carry it.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from msgspec import Struct

from sdp_reconciler.errors import SdpError
from sdp_reconciler.redaction import SECRETS, redact

CHANNEL = "sdp_history"
"""The NOTIFY channel every PostgreSQL write transaction signals on."""
SCHEMA_LOCK = 0x5D9_4157
"""The advisory lock key serialising schema migrations of one PostgreSQL database."""
ORDER_LOCK = 0x5D9_4158
"""The advisory lock that makes event ids commit in order (see ``PostgresBackend.write``)."""
PASSWORD_ENV = "PGPASSWORD"  # noqa: S105 - the variable's name


class Location(Struct, frozen=True):
    """One history database, as parsed from ``--history`` or ``SDP_HISTORY``."""

    kind: Literal["sqlite", "postgresql"]
    path: Path | None = None
    conninfo: str | None = None
    """libpq URL without any password"""
    password: str | None = None

    def __str__(self) -> str:
        return f"{self.path if self.kind == 'sqlite' else self.conninfo}"

    def exists(self) -> bool:
        """Whether there is a history to read (a PostgreSQL database is taken to exist)."""
        return self.kind == "postgresql" or (self.path is not None and self.path.exists())


def parse_location(text: str | Path, env: Mapping[str, str] | None = None, *,
                   from_argv: bool = False) -> Location:
    """``text`` as a history location; ``from_argv``: it came from the command line."""
    if isinstance(text, Path):
        return Location("sqlite", path=text)
    if text.startswith("sqlite://"):
        path = text[len("sqlite://"):]
        if not path.startswith("/"):
            raise SdpError(f"{text}: a SQLite history URL is sqlite:///ABSOLUTE/PATH "
                           "(or give the file's path as it is)")
        return Location("sqlite", path=Path(path))
    if not text.startswith(("postgresql://", "postgres://")):
        if "://" in text:
            raise SdpError(f"{text.split('://')[0]}://...: a history is a SQLite file "
                           "(a path or sqlite:///PATH) or postgresql://USER@HOST:PORT/DB")
        return Location("sqlite", path=Path(text))
    return _postgres_location(text, env or {}, from_argv=from_argv)


def _postgres_location(text: str, env: Mapping[str, str], *, from_argv: bool) -> Location:
    parts = urlsplit(text)
    options = dict(parse_qsl(parts.query))
    password = unquote(parts.password) if parts.password else None
    if password is not None:
        SECRETS.add(password, parts.password or "")
        if from_argv:
            raise SdpError(
                "--history: a password on the command line can be read by every process of "
                f"this host; give it in ${PASSWORD_ENV} (or ?password_env=NAME, "
                "?password_file=PATH), or the whole URL in $SDP_HISTORY")
    if "password" in options:
        SECRETS.add(options["password"])
        raise SdpError("history URL: give the password in the environment (?password_env=NAME"
                       f" or ${PASSWORD_ENV}) or ?password_file=PATH, not as ?password=")
    if password is None and "password_env" in options:
        name = options["password_env"]
        if not env.get(name):
            raise SdpError(f"history URL: ?password_env={name} but ${name} is not set")
        password = env[name]
    elif password is None and "password_file" in options:
        file = Path(options["password_file"]).expanduser()
        try:
            password = file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise SdpError(f"history URL: cannot read password_file {file}: {e.strerror}") from e
    elif password is None and env.get(PASSWORD_ENV):
        password = env[PASSWORD_ENV]
    if password:
        SECRETS.add(password)
    options.pop("password_env", None)
    options.pop("password_file", None)
    if not parts.hostname or not parts.path.strip("/"):
        raise SdpError(f"{_without_password(parts, options)}: a PostgreSQL history URL is "
                       "postgresql://USER@HOST:PORT/DATABASE")
    return Location("postgresql", conninfo=_without_password(parts, options), password=password)


def _without_password(parts: Any, options: dict[str, str]) -> str:
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}{parts.hostname or ''}{port}"
    return str(urlunsplit(("postgresql", netloc, parts.path, urlencode(options), "")))


class Result(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Listener(Protocol):
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """A SELECT on the listener's own connection; only from within ``on_change`` (its
        thread): a reader woken by a write reads it without a second connection or thread."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    kind: str

    def ensure_schema(self, schema: str, migrations: Sequence[tuple[str, ...]]) -> None: ...

    def write(self, *, ordered: bool = False) -> AbstractContextManager[Transaction]: ...

    def query(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]: ...

    def listen(self, on_change: Callable[[], None]) -> Listener | None: ...

    def columns(self, table: str) -> list[str]: ...

    def continue_ids(self, table: str) -> None: ...

    def close(self) -> None: ...


# -- SQLite ---------------------------------------------------------------------------------------


class SqliteBackend:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as e:
            raise SdpError(f"cannot open the history database {path}: {e}") from e
        self._lock = threading.Lock()

    def ensure_schema(self, schema: str, migrations: Sequence[tuple[str, ...]]) -> None:
        try:
            self._db.executescript(schema)
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            _check_version(version, len(migrations), str(self.path))
            with self._db:
                for number in range(version, len(migrations)):
                    for statement in migrations[number]:
                        try:
                            self._db.execute(statement)
                        except sqlite3.OperationalError as e:
                            if "duplicate column" not in str(e):  # a half-applied old run
                                raise
                    self._db.execute(f"PRAGMA user_version = {number + 1}")
        except sqlite3.Error as e:
            raise SdpError(f"cannot open the history database {self.path}: {e}") from e

    @contextmanager
    def write(self, *, ordered: bool = False) -> Iterator[Transaction]:
        with self._lock:  # one writer at a time: ids always commit in order
            try:
                with self._db:
                    yield _SqliteTransaction(self._db)
            except sqlite3.Error as e:
                raise SdpError(f"cannot write the history database {self.path}: {e}") from e

    def query(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return [dict(r) for r in self._db.execute(sql, tuple(params)).fetchall()]
            except sqlite3.Error as e:
                raise SdpError(f"cannot read the history database {self.path}: {e}") from e

    def listen(self, on_change: Callable[[], None]) -> Listener | None:
        return None  # a file cannot push: readers poll

    def columns(self, table: str) -> list[str]:
        return [str(r["name"]) for r in self.query(f"PRAGMA table_info({table})", ())]

    def continue_ids(self, table: str) -> None:
        pass  # AUTOINCREMENT continues after the largest id by itself

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _SqliteTransaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        return _DictResult(self._db.execute(sql, tuple(params)))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, [tuple(r) for r in rows])


class _DictResult:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.rowcount = int(cursor.rowcount)

    def fetchone(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else dict(row)

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._cursor.fetchall()]


def _check_version(found: int, known: int, where: str) -> None:
    if found > known:
        raise SdpError(
            f"the history database {where} has schema version {found}, newer than this "
            f"sdp-reconcile knows ({known}): upgrade sdp-reconcile on this host (every host "
            "sharing one history must run a version at least as new as the newest)")


# -- PostgreSQL -----------------------------------------------------------------------------------

_LITERAL_OR_MARK = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?|\buser\b", re.IGNORECASE)


def postgres_sql(sql: str) -> str:
    """SQLite-dialect SQL of ``History`` as PostgreSQL (psycopg's ``%s`` placeholders).

    ``INSERT OR IGNORE`` becomes ``ON CONFLICT DO NOTHING``; ``INSERT OR REPLACE`` has no
    faithful translation (it deletes the conflicting row) and is refused: write the upsert
    as ``INSERT ... ON CONFLICT (key) DO UPDATE SET ...``, which both databases run.
    """
    head = sql.lstrip()[:40].upper()
    if head.startswith("INSERT OR REPLACE"):
        raise SdpError("history SQL: INSERT OR REPLACE is SQLite's own; write the upsert as "
                       "INSERT ... ON CONFLICT (key) DO UPDATE SET ... (both databases run it)")
    if head.startswith("INSERT OR IGNORE"):
        sql = re.sub(r"^\s*INSERT OR IGNORE", "INSERT", sql, flags=re.IGNORECASE)
        sql = sql.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    sql = sql.replace("%", "%%")

    def swap(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "?":
            return "%s"
        if found.lower() == "user":
            return '"user"'
        return found  # a literal or a quoted name: as it is

    return _LITERAL_OR_MARK.sub(swap, sql)


def postgres_ddl(statement: str) -> str:
    """One SQLite DDL statement of ``history.SCHEMA`` / ``MIGRATIONS`` as PostgreSQL."""
    statement = re.sub(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b",
                       "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", statement)
    statement = re.sub(r"\bINTEGER\b", "BIGINT", statement)
    statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)
    statement = re.sub(r"\s+REFERENCES\s+\w+\s*\(\w+\)", "", statement)
    statement = re.sub(r"\bADD COLUMN\b(?! IF NOT EXISTS)", "ADD COLUMN IF NOT EXISTS",
                       statement)
    return postgres_sql(statement).replace("%%", "%")


class PostgresBackend:
    kind = "postgresql"

    def __init__(self, location: Location, *, max_size: int = 4) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.location = location
        # Commits do not wait for the WAL flush (as SQLite's synchronous=NORMAL): a crash of
        # the database server can lose the last few hundred milliseconds of history, never
        # corrupt it, and a writer's event reaches the page in a few milliseconds.
        self._kwargs: dict[str, Any] = {"row_factory": dict_row,
                                        "options": "-c synchronous_commit=off"}
        if location.password:
            self._kwargs["password"] = location.password
        self._probe()
        self._pool = ConnectionPool(str(location.conninfo), min_size=1, max_size=max_size,
                                    kwargs=self._kwargs, open=False, name="sdp-history")
        try:
            self._pool.open(wait=True, timeout=15)
        except Exception as e:
            self._pool.close()
            raise SdpError(f"cannot connect to the history database {location}: "
                           f"{redact(str(e))}") from None

    def _probe(self) -> None:
        """One direct connection first: the pool would only say it timed out, not why."""
        import psycopg

        try:
            psycopg.connect(str(self.location.conninfo), connect_timeout=10,
                            **self._kwargs).close()
        except psycopg.Error as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            why = " ".join(lines) or type(e).__name__
            if "no password supplied" in why:
                why += (f" (give it in ${PASSWORD_ENV}, or ?password_env=NAME or "
                        "?password_file=PATH in the URL)")
            raise SdpError(f"cannot connect to the history database {self.location}: "
                           f"{redact(why)}") from None

    def ensure_schema(self, schema: str, migrations: Sequence[tuple[str, ...]]) -> None:
        import psycopg

        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                row: Any = conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = int(row["version"]) if row else 0
                _check_version(version, len(migrations), str(self.location))
                for statement in _statements(schema):
                    conn.execute(postgres_ddl(statement).encode())
                for number in range(version, len(migrations)):
                    for statement in migrations[number]:
                        conn.execute(postgres_ddl(statement).encode())
                    conn.execute("UPDATE schema_version SET version = %s", (number + 1,))
        except psycopg.Error as e:
            raise SdpError(f"cannot set up the history database {self.location}: "
                           f"{redact(str(e))}") from None

    @contextmanager
    def write(self, *, ordered: bool = False) -> Iterator[Transaction]:
        """A transaction; ``ordered``: its new ids commit in id order across every writer of
        the database (readers tail by id and must never see 11 before 10 commits)."""
        import psycopg

        try:
            with self._pool.connection() as conn, conn.transaction():
                if ordered:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ORDER_LOCK,))
                yield _PostgresTransaction(conn)
                conn.execute(f"NOTIFY {CHANNEL}")
        except psycopg.Error as e:
            raise SdpError(f"cannot write the history database {self.location}: "
                           f"{redact(str(e))}") from None

    def query(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        import psycopg

        try:
            with self._pool.connection() as conn:
                rows: list[Any] = conn.execute(postgres_sql(sql).encode(),
                                               list(params)).fetchall()
                return [dict(r) for r in rows]
        except psycopg.Error as e:
            raise SdpError(f"cannot read the history database {self.location}: "
                           f"{redact(str(e))}") from None

    def listen(self, on_change: Callable[[], None]) -> Listener | None:
        return _PostgresListener(self.location, self._kwargs, on_change)

    def columns(self, table: str) -> list[str]:
        rows = self.query("SELECT column_name FROM information_schema.columns WHERE "
                          "table_schema = current_schema() AND table_name = ? "
                          "ORDER BY ordinal_position", (table,))
        return [str(r["column_name"]) for r in rows]

    def continue_ids(self, table: str) -> None:
        with self.write() as db:
            db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                       f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)")

    def close(self) -> None:
        self._pool.close()


class _PostgresTransaction:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self._conn.execute(postgres_sql(sql).encode(), list(params))
        return _PostgresResult(cursor)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(postgres_sql(sql).encode(), [list(r) for r in rows])


class _PostgresResult:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.rowcount = int(cursor.rowcount)

    def fetchone(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else dict(row)

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._cursor.fetchall()]


class _PostgresListener:
    """A thread on its own connection that LISTENs and calls ``on_change`` once per batch of
    notifications (those that arrived together, or while ``on_change`` ran, count as one).

    ``on_change`` may ``query`` on the same connection: the notification wait is left for it,
    and notifications arriving meanwhile are kept by psycopg for the next wait. Reconnects (once
    a second) when the connection drops, calling ``on_change`` after each reconnect so that a
    reader catches up on what it may have missed.
    """

    def __init__(self, location: Location, kwargs: dict[str, Any],
                 on_change: Callable[[], None]) -> None:
        self._location = location
        self._kwargs = kwargs
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdp-history-listen",
                                        daemon=True)
        self._ready = threading.Event()
        self._conn: Any = None
        self._thread.start()
        self._ready.wait(10)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        import psycopg

        assert threading.current_thread() is self._thread, "query only from on_change"
        try:
            rows: list[Any] = self._conn.execute(postgres_sql(sql).encode(),
                                                 list(params)).fetchall()
        except psycopg.Error as e:
            raise SdpError(f"cannot read the history database {self._location}: "
                           f"{redact(str(e))}") from None
        return [dict(r) for r in rows]

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(str(self._location.conninfo), autocommit=True,
                                     connect_timeout=10, **self._kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._conn = conn
                    self._ready.set()
                    self._on_change()
                    while not self._stop.is_set():
                        # stop_after=1: the wait ends (and gives the connection back) as soon
                        # as a batch arrived, so that on_change can read on it.
                        woken = False
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            woken = True
                        if woken:
                            self._on_change()
            except psycopg.Error:
                self._ready.set()
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def open_backend(location: Location) -> Backend:
    if location.kind == "sqlite":
        assert location.path is not None
        return SqliteBackend(location.path)
    return PostgresBackend(location)
