"""Deployment history, live events, the audit trail and sandbox status, in SQLite or PostgreSQL.

SQLite (the default: one file, WAL mode) lets ``--once``, ``watch`` and ``serve`` on one host
share it; PostgreSQL (``--history postgresql://...``) lets them share it across hosts: a CI
runner's ``--once`` and the page on the ``watch`` host. The reconciler writes as things happen,
with increasing ids, and a page tails the ``events`` table to stream progress live (woken by
NOTIFY on PostgreSQL, polling on SQLite). ``historydb`` is the seam between the two.

Promises: nothing here stores a credential or a secret value (every text written passes
``redaction.SECRETS``, which holds every secret this process resolved, after the agents
redacted theirs); rows are only ever added or updated, never rewritten wholesale.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from msgspec import Struct
from msgspec.structs import asdict

from sdp_reconciler.historydb import (
    Backend,
    Listener,
    Location,
    Transaction,
    open_backend,
    parse_location,
)
from sdp_reconciler.redaction import redact

SCHEMA = """
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    mode TEXT NOT NULL,
    runner TEXT NOT NULL,
    state_revision TEXT,
    status TEXT NOT NULL DEFAULT 'RUNNING',
    summary TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pass_id INTEGER NOT NULL REFERENCES passes(id),
    step_id TEXT NOT NULL,
    sandbox TEXT NOT NULL,
    service TEXT,
    node TEXT NOT NULL,
    resource TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    repository TEXT,
    branch TEXT,
    commit_sha TEXT,
    previous_commit TEXT,
    port INTEGER,
    environment TEXT,
    author TEXT,
    uncommitted INTEGER NOT NULL DEFAULT 0,
    runner TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT,
    message TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX IF NOT EXISTS deployments_sandbox ON deployments(sandbox, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pass_id INTEGER,
    deployment_id INTEGER,
    sandbox TEXT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    event TEXT,
    state TEXT,
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_deployment ON events(deployment_id, id);
CREATE INDEX IF NOT EXISTS events_sandbox ON events(sandbox, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    deployment_id INTEGER,
    user TEXT,
    uncommitted INTEGER NOT NULL DEFAULT 0,
    runner TEXT NOT NULL,
    action TEXT NOT NULL,
    repository TEXT,
    branch TEXT,
    commit_sha TEXT,
    environment TEXT,
    sandbox TEXT NOT NULL,
    service TEXT,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    sender TEXT NOT NULL,
    event TEXT NOT NULL,
    repository TEXT NOT NULL,
    branches TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS hooks_at ON hooks(at);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE TABLE IF NOT EXISTS status (
    sandbox TEXT NOT NULL,
    service TEXT NOT NULL,
    node TEXT,
    sync TEXT NOT NULL,
    health TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    branch TEXT,
    attempted_commit TEXT,
    applied_commit TEXT,
    port INTEGER,
    url TEXT,
    route TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (sandbox, service)
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT NOT NULL,
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    container TEXT NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    cpu_percent REAL,
    memory_bytes INTEGER,
    memory_limit_bytes INTEGER,
    restart_count INTEGER NOT NULL DEFAULT 0,
    health TEXT,
    UNIQUE (container, at)
);
CREATE INDEX IF NOT EXISTS samples_sandbox ON samples(sandbox, service, at);
CREATE TABLE IF NOT EXISTS expiry_warnings (
    sandbox TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (sandbox, expires_at)
);
"""


_SET_META = ("INSERT INTO meta (key, value) VALUES (?, ?) "
             "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
_STATUS_COLUMNS = ("node", "sync", "health", "reason", "message", "branch", "attempted_commit",
                   "applied_commit", "port", "url", "route", "updated_at")
_SET_STATUS = (
    "INSERT INTO status (sandbox, service, " + ", ".join(_STATUS_COLUMNS) + ") VALUES ("  # noqa: S608
    + ", ".join("?" for _ in range(len(_STATUS_COLUMNS) + 2)) + ") ON CONFLICT (sandbox,"
    " service) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _STATUS_COLUMNS))


def _redacted(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}


MIGRATIONS: list[tuple[str, ...]] = [
    # 1: who runs a pass, so that the next pass can tell a dead one from a live one
    ("ALTER TABLE passes ADD COLUMN host TEXT", "ALTER TABLE passes ADD COLUMN pid INTEGER"),
    # 2: which state commit and access.yaml permission (and role) authorised an audited change
    ("ALTER TABLE audit ADD COLUMN state_commit TEXT",
     "ALTER TABLE audit ADD COLUMN permission TEXT", "ALTER TABLE audit ADD COLUMN role TEXT",
     "ALTER TABLE audit ADD COLUMN note TEXT"),
    # 3: what started a pass (interval, state change, a webhook's repository@branch)
    ("ALTER TABLE passes ADD COLUMN trigger TEXT",),
]
"""Schema changes after the first version, applied in order (PRAGMA user_version counts them)."""
PRUNE_EVERY_SECONDS = 3600
SAMPLES_KEEP_SECONDS = 15 * 60
"""container samples older than this leave the history (the page charts the last minutes)"""
STALE_PASS_SECONDS = 24 * 3600
"""A pass of another host that has not finished after this long is taken as interrupted."""


class Retention(Struct, frozen=True):
    """How long the history keeps what (days); audit rows outlive deployments."""

    deployments_days: int = 90
    audit_days: int = 730


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StatusRow(Struct, frozen=True):
    sandbox: str
    service: str
    node: str | None
    sync: str
    health: str
    reason: str
    message: str = ""
    branch: str | None = None
    attempted_commit: str | None = None
    applied_commit: str | None = None
    port: int | None = None
    url: str | None = None
    route: str | None = None


class History:
    """The store, on SQLite (a path) or PostgreSQL (a ``postgresql://`` location): one API.

    Thread-safe. SQL here is SQLite's dialect; ``historydb`` runs it on either database.
    """

    def __init__(self, location: Path | str | Location,
                 env: Mapping[str, str] | None = None) -> None:
        if not isinstance(location, Location):
            location = parse_location(location, os.environ if env is None else env)
        self.location = location
        self.path = location.path
        """The SQLite file (None on PostgreSQL)."""
        self._backend: Backend = open_backend(location)
        try:
            self._backend.ensure_schema(SCHEMA, MIGRATIONS)
        except BaseException:
            self._backend.close()
            raise

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._backend.kind

    def close(self) -> None:
        self._backend.close()

    def listen(self, on_change: Callable[[], None]) -> Listener | None:
        """Call ``on_change`` (from another thread) after every committed write by any process
        on any host; None when the database cannot push (SQLite: readers poll)."""
        return self._backend.listen(on_change)

    def _write(self, *, ordered: bool = False) -> AbstractContextManager[Transaction]:
        return self._backend.write(ordered=ordered)

    def _insert(self, table: str, values: Mapping[str, Any]) -> int:
        values = _redacted(values)
        columns = ", ".join(f'"{k}"' for k in values)
        marks = ", ".join("?" for _ in values)
        with self._write(ordered=table == "events") as db:  # the page tails events by id
            row = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks}) "  # noqa: S608
                             "RETURNING id", list(values.values())).fetchone()
            return int(row["id"]) if row else 0

    def _update(self, table: str, row_id: int, values: Mapping[str, Any]) -> None:
        values = _redacted(values)
        assignments = ", ".join(f'"{k}" = ?' for k in values)
        with self._write() as db:
            db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608
                       [*values.values(), row_id])

    # -- passes -----------------------------------------------------------------------------------

    def start_pass(self, *, mode: str, runner: str, state_revision: str | None,
                   trigger: str | None = None) -> int:
        self.mark_interrupted()
        return self._insert("passes", {"started_at": now(), "mode": mode, "runner": runner,
                                       "state_revision": state_revision, "trigger": trigger,
                                       "host": socket.gethostname(), "pid": os.getpid()})

    def mark_interrupted(self) -> list[int]:
        """Passes left RUNNING by a process that died: marked INTERRUPTED, with why.

        A pass of this host whose process is gone; a pass of another host that has not
        finished after ``STALE_PASS_SECONDS`` (that host's processes cannot be asked).
        """
        host = socket.gethostname()
        cutoff = datetime.now(UTC).timestamp() - STALE_PASS_SECONDS
        dead = []
        for row in self.query("SELECT id, host, pid, started_at FROM passes "
                              "WHERE status = 'RUNNING'"):
            if row["host"] == host and row["pid"] is not None and row["pid"] != os.getpid():
                if not _alive(int(row["pid"])):
                    dead.append((row["id"], f"interrupted: process {row['pid']} on {host} "
                                             "ended before the pass finished"))
            elif datetime.fromisoformat(row["started_at"]).timestamp() < cutoff:
                dead.append((row["id"], "interrupted: no word from the pass for a day"))
        for pass_id, why in dead:
            self._update("passes", pass_id, {"status": "INTERRUPTED", "finished_at": now(),
                                             "summary": why})
            self._write_deployments_of_interrupted(pass_id)
        return [pass_id for pass_id, _ in dead]

    def _write_deployments_of_interrupted(self, pass_id: int) -> None:
        with self._write() as db:
            db.execute("UPDATE deployments SET status = 'INTERRUPTED', completed_at = ? "
                       "WHERE pass_id = ? AND completed_at IS NULL", (now(), pass_id))

    def prune(self, retention: Retention, *, force: bool = False) -> dict[str, int]:
        """Forget deployments, events and passes older than ``retention`` (audit rows after
        their own, longer, time); at most once an hour unless ``force``. Counts removed."""
        stamp = datetime.now(UTC)
        last = self.query("SELECT value FROM meta WHERE key = 'pruned_at'")
        if not force and last and stamp.timestamp() - datetime.fromisoformat(
                last[0]["value"]).timestamp() < PRUNE_EVERY_SECONDS:
            return {}
        old = (stamp - timedelta(days=retention.deployments_days)).isoformat(
            timespec="milliseconds")
        old_audit = (stamp - timedelta(days=retention.audit_days)).isoformat(
            timespec="milliseconds")
        with self._write() as db:
            removed = {
                "events": db.execute("DELETE FROM events WHERE at < ?", (old,)).rowcount,
                # Audit rows carry their own fields: they outlive the deployments they name.
                "deployments": db.execute("DELETE FROM deployments WHERE started_at < ?",
                                          (old,)).rowcount,
                "audit": db.execute("DELETE FROM audit WHERE at < ?", (old_audit,)).rowcount,
                "hooks": db.execute("DELETE FROM hooks WHERE at < ?", (old,)).rowcount,
                # A warning row only stops a second warning for the same expiry: once that
                # expiry is past the retention, nothing can warn of it again.
                "expiry_warnings": db.execute("DELETE FROM expiry_warnings WHERE expires_at < ?",
                                              (old,)).rowcount,
            }
            removed["passes"] = db.execute(
                "DELETE FROM passes WHERE started_at < ? AND id NOT IN "
                "(SELECT pass_id FROM deployments)", (old,)).rowcount
            db.execute(_SET_META, ("pruned_at", stamp.isoformat(timespec="milliseconds")))
        return removed

    def meta(self, key: str) -> str | None:
        """A value the passes keep between them (e.g. the last state commit authorised)."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute(_SET_META, (key, value))

    def finish_pass(self, pass_id: int, *, status: str, summary: str) -> None:
        self._update("passes", pass_id, {"finished_at": now(), "status": status,
                                         "summary": summary})

    # -- deployments and events ------------------------------------------------------------------

    def start_deployment(self, **values: Any) -> int:
        return self._insert("deployments", {**values, "started_at": now()})

    def update_deployment(self, deployment_id: int, **values: Any) -> None:
        self._update("deployments", deployment_id, values)

    def add_event(self, **values: Any) -> int:
        return self._insert("events", {"at": values.pop("at", None) or now(), **values})

    def add_hook(self, *, sender: str, event: str, repository: str, branches: list[str],
                 result: str, detail: str = "") -> int:
        """One accepted (correctly signed) webhook and what ``watch`` made of it."""
        return self._insert("hooks", {"at": now(), "sender": sender, "event": event,
                                      "repository": repository, "branches": ",".join(branches),
                                      "result": result, "detail": detail})

    def add_refusal(self, *, sandbox: str, line: str, commit: str | None, permission: str,
                    runner: str) -> bool:
        """An audit row for a refused change, once per refusal line (a held change is judged
        again every pass); True when it was new."""
        if self.query("SELECT 1 FROM audit WHERE action = 'refused' AND sandbox = ? AND "
                      "note = ?", (sandbox, line)):
            return False
        self.add_audit(action="refused", status="REFUSED", sandbox=sandbox, note=line,
                       state_commit=commit, permission=permission, runner=runner)
        return True

    def add_audit(self, **values: Any) -> int:
        return self._insert("audit", {"at": now(), **values})

    def set_status(self, rows: list[StatusRow], *, sandboxes: set[str]) -> None:
        """Replace the status of ``sandboxes`` with ``rows``; forget sandboxes not in the state."""
        with self._write() as db:
            for sandbox in sandboxes:
                db.execute("DELETE FROM status WHERE sandbox = ?", (sandbox,))
            for row in rows:
                row = StatusRow(**_redacted(asdict(row)))
                db.execute(
                    _SET_STATUS,
                    (row.sandbox, row.service, row.node, row.sync, row.health, row.reason,
                     row.message, row.branch, row.attempted_commit, row.applied_commit,
                     row.port, row.url, row.route, now()),
                )

    def forget_sandboxes_except(self, keep: set[str]) -> None:
        with self._write() as db:
            rows = db.execute("SELECT DISTINCT sandbox FROM status").fetchall()
            for row in rows:
                if row["sandbox"] not in keep:
                    db.execute("DELETE FROM status WHERE sandbox = ?", (row["sandbox"],))

    # -- the page's sessions (web.sessions: only a token's SHA-256 is ever stored) -------------

    def add_session(self, token_sha256: str, *, username: str, created_at: float,
                    expires_at: float, replacing: str | None = None) -> None:
        """A new session; the one whose digest is ``replacing`` (if any) ends with it, and
        every expired session is forgotten."""
        with self._write() as db:
            if replacing:
                db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (replacing,))
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (created_at,))
            db.execute("INSERT INTO sessions (token_sha256, username, created_at, expires_at) "
                       "VALUES (?, ?, ?, ?)", (token_sha256, username, created_at, expires_at))

    def session(self, token_sha256: str) -> dict[str, Any] | None:
        rows = self.query("SELECT username, created_at, expires_at FROM sessions "
                          "WHERE token_sha256 = ?", (token_sha256,))
        return rows[0] if rows else None

    def end_session(self, token_sha256: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (token_sha256,))

    def live_sessions(self, at: float) -> int:
        rows = self.query("SELECT COUNT(*) AS n FROM sessions WHERE expires_at > ?", (at,))
        return int(rows[0]["n"])

    # -- copying (historycopy) ------------------------------------------------------------------

    def columns(self, table: str) -> list[str]:
        """The columns ``table`` has in this database."""
        return self._backend.columns(table)

    def insert_missing(self, table: str, rows: list[dict[str, Any]]) -> int:
        """Insert ``rows`` as they are (ids included), skipping any this database holds;
        how many were new."""
        added = 0
        with self._write() as db:
            for row in rows:
                names = ", ".join(f'"{k}"' for k in row)
                marks = ", ".join("?" for _ in row)
                added += db.execute(
                    f"INSERT INTO {table} ({names}) VALUES ({marks}) "  # noqa: S608
                    "ON CONFLICT DO NOTHING", list(row.values())).rowcount
        return added

    def continue_ids_after_copy(self, table: str) -> None:
        """New rows of ``table`` get ids after every copied one."""
        self._backend.continue_ids(table)

    # -- reading ----------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a SELECT in SQLite's dialect (``?`` placeholders), on either database."""
        return self._backend.query(sql, params)

    def status(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM status ORDER BY sandbox, service")

    def record_samples(self, rows: list[dict[str, Any]], *,
                       keep_seconds: float = SAMPLES_KEEP_SECONDS) -> None:
        """Container samples the agents reported (each once: (container, at) is unique); those
        older than ``keep_seconds`` go. They feed the page's charts and /metrics."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=keep_seconds)).isoformat()
        with self._write() as db:
            columns = ("sandbox", "service", "node", "container", "at", "state", "cpu_percent",
                       "memory_bytes", "memory_limit_bytes", "restart_count", "health")
            db.executemany(
                f"INSERT OR IGNORE INTO samples ({', '.join(columns)}) VALUES "  # noqa: S608
                f"({', '.join('?' for _ in columns)})",
                [tuple(_redacted(r).get(c) for c in columns) for r in rows])
            db.execute("DELETE FROM samples WHERE at < ?", (cutoff,))

    def claim_expiry_warning(self, sandbox: str, expires_at: datetime) -> bool:
        """True the first time (sandbox, expiry) is claimed: the warning is then due; False
        when this or another reconciler sharing the store already sent it."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO expiry_warnings (sandbox, expires_at, sent_at) "
                "VALUES (?, ?, ?)",
                (sandbox, expires_at.astimezone(UTC).isoformat(timespec="seconds"), now()))
            return cursor.rowcount == 1

    def last_deploys(self) -> dict[str, datetime]:
        """Sandbox -> when its last successful deploy completed."""
        out: dict[str, datetime] = {}
        for row in self.query(
            "SELECT sandbox, MAX(completed_at) AS at FROM deployments WHERE status = 'RUNNING' "
            "AND completed_at IS NOT NULL GROUP BY sandbox"
        ):
            out[row["sandbox"]] = datetime.fromisoformat(row["at"])
        return out

    def events_after(self, last_id: int, *, sandbox: str | None = None,
                     limit: int = 500) -> list[dict[str, Any]]:
        if sandbox is None:
            return self.query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?",
                              (last_id, limit))
        return self.query(
            "SELECT * FROM events WHERE id > ? AND sandbox = ? ORDER BY id LIMIT ?",
            (last_id, sandbox, limit))

