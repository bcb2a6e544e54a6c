"""Deployment history, live events, the audit trail and sandbox status, in SQLite.

One file (path configurable), WAL mode, so ``--once``, ``watch`` and ``serve`` on one host share
it: the reconciler writes as things happen, with increasing ids, and a ``serve`` process tails
the ``events`` table to stream progress live. Promises: nothing here stores a credential or a
secret value (every text written passes ``redaction.SECRETS``, which holds every secret this
process resolved, after the agents redacted theirs); rows are only ever added or updated,
never rewritten wholesale.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sdp_reconciler.errors import SdpError
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
"""


def _redacted(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}


MIGRATIONS: list[tuple[str, ...]] = [
    # 1: who runs a pass, so that the next pass can tell a dead one from a live one
    ("ALTER TABLE passes ADD COLUMN host TEXT", "ALTER TABLE passes ADD COLUMN pid INTEGER"),
    # 2: which state commit and access.yaml permission (and role) authorised an audited change
    ("ALTER TABLE audit ADD COLUMN state_commit TEXT",
     "ALTER TABLE audit ADD COLUMN permission TEXT", "ALTER TABLE audit ADD COLUMN role TEXT",
     "ALTER TABLE audit ADD COLUMN note TEXT"),
]
"""Schema changes after the first version, applied in order (PRAGMA user_version counts them)."""
PRUNE_EVERY_SECONDS = 3600
STALE_PASS_SECONDS = 24 * 3600
"""A pass of another host that has not finished after this long is taken as interrupted."""


@dataclass(frozen=True)
class Retention:
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


@dataclass(frozen=True)
class StatusRow:
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
    """The SQLite store. Thread-safe: one connection, one lock; WAL for concurrent readers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as e:
            raise SdpError(f"cannot open the history database {path}: {e}") from e
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise SdpError(
                f"the history database {self.path} has schema version {version}, newer than "
                f"this sdp-reconcile knows ({len(MIGRATIONS)}): upgrade sdp-reconcile")
        with self._db:
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    try:
                        self._db.execute(statement)
                    except sqlite3.OperationalError as e:
                        if "duplicate column" not in str(e):  # a half-applied old run
                            raise
                self._db.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._db:
                    yield self._db
            except sqlite3.Error as e:
                raise SdpError(f"cannot write the history database {self.path}: {e}") from e

    def _insert(self, table: str, values: Mapping[str, Any]) -> int:
        values = _redacted(values)
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._write() as db:
            cursor = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608
                                list(values.values()))
            return int(cursor.lastrowid or 0)

    def _update(self, table: str, row_id: int, values: Mapping[str, Any]) -> None:
        values = _redacted(values)
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608
                       [*values.values(), row_id])

    # -- passes -----------------------------------------------------------------------------------

    def start_pass(self, *, mode: str, runner: str, state_revision: str | None) -> int:
        self.mark_interrupted()
        return self._insert("passes", {"started_at": now(), "mode": mode, "runner": runner,
                                       "state_revision": state_revision,
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
            }
            removed["passes"] = db.execute(
                "DELETE FROM passes WHERE started_at < ? AND id NOT IN "
                "(SELECT pass_id FROM deployments)", (old,)).rowcount
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('pruned_at', ?)",
                       (stamp.isoformat(timespec="milliseconds"),))
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
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           (key, value))

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
                row = StatusRow(**_redacted(vars(row)))
                db.execute(
                    "INSERT OR REPLACE INTO status (sandbox, service, node, sync, health, reason,"
                    " message, branch, attempted_commit, applied_commit, port, url, route,"
                    " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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

    # -- reading ----------------------------------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, params).fetchall()]

    def status(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM status ORDER BY sandbox, service")

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

