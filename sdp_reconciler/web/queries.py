"""The page's reads of the history database (``History.query``): filtered, bounded, newest first.

Every query here is a SELECT with bound parameters; column names used in filters come from a
fixed allow-list. Rows are plain dicts as SQLite returns them. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from msgspec import Struct

from sdp_node.numbers import plain_number
from sdp_reconciler.history import History

Row = dict[str, Any]

ROW_ID_MAX = 2**63 - 1
"""SQLite's largest row id: a larger number names no row (and would not fit a query)."""


def row_id(value: str | None) -> int | None:
    """A row id from a query parameter or header, clamped to ``ROW_ID_MAX``; None unless it is
    plain ASCII digits."""
    return plain_number(value, at_most=ROW_ID_MAX)

_EVENTS_WITH_DEPLOYMENT = (
    "SELECT e.id, e.pass_id, e.deployment_id, e.sandbox, e.at, e.kind, e.stage, e.event,"
    " e.state, e.message, d.service, d.resource, d.node, d.action"
    " FROM events e LEFT JOIN deployments d ON d.id = e.deployment_id"
)


class DeploymentFilter(Struct, frozen=True):
    sandbox: str | None = None
    repository: str | None = None
    status: str | None = None
    before: int | None = None
    """Only rows with a smaller id (the next page)."""

    def clauses(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column in ("sandbox", "repository", "status"):
            value = getattr(self, column)
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if self.before is not None:
            where.append("id < ?")
            params.append(self.before)
        return (" WHERE " + " AND ".join(where)) if where else "", params


def last_event_id(history: History) -> int:
    rows = history.query("SELECT COALESCE(MAX(id), 0) AS last FROM events")
    return int(rows[0]["last"])


def events_after(history: History, last_id: int, *, sandbox: str | None = None,
                 limit: int = 500) -> list[Row]:
    """Events after ``last_id`` with their deployment's service, resource, node and action."""
    if sandbox is None:
        return history.query(f"{_EVENTS_WITH_DEPLOYMENT} WHERE e.id > ? ORDER BY e.id LIMIT ?",
                             (last_id, limit))
    return history.query(
        f"{_EVENTS_WITH_DEPLOYMENT} WHERE e.id > ? AND e.sandbox = ? ORDER BY e.id LIMIT ?",
        (last_id, sandbox, limit))


_MARKER = (
    "SELECT (SELECT COUNT(*) FROM status) AS n, (SELECT MAX(updated_at) FROM status) AS s,"
    " (SELECT MAX(id) FROM passes) AS p, (SELECT MAX(finished_at) FROM passes) AS f,"
    " (SELECT MAX(completed_at) FROM deployments) AS d,"
    " (SELECT MAX(id) FROM samples) AS m"
)
_MARKER_KEYS = ("n", "s", "p", "f", "d", "m")


def change_marker(history: History) -> tuple[Any, ...]:
    """A value that changes whenever the status, a pass or a deployment's outcome changes."""
    row = history.query(_MARKER)[0]
    return tuple(row[k] for k in _MARKER_KEYS)


class Reader(Protocol):
    """What runs a SELECT in SQLite's dialect: the ``History``, or a PostgreSQL listener's own
    connection (``historydb.Listener``)."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


def events_and_marker(history: Reader, last_id: int, *, limit: int = 500
                      ) -> tuple[list[Row], tuple[Any, ...]]:
    """``events_after`` and ``change_marker`` in one statement: the hub asks both on every
    wake-up, and on PostgreSQL each trip to the database is a pool checkout and a round trip
    on the path from a write to every page."""
    found = history.query(
        f"SELECT mk.n AS mk_n, mk.s AS mk_s, mk.p AS mk_p, mk.f AS mk_f, mk.d AS mk_d,"  # noqa: S608
        f" mk.m AS mk_m, ev.* FROM ({_MARKER}) mk LEFT JOIN ("
        f"{_EVENTS_WITH_DEPLOYMENT} WHERE e.id > ? ORDER BY e.id LIMIT ?) ev ON 1 = 1"
        " ORDER BY ev.id", (last_id, limit))
    marker = tuple(found[0][f"mk_{k}"] for k in _MARKER_KEYS)
    rows = [{k: v for k, v in r.items() if not k.startswith("mk_")} for r in found
            if r["id"] is not None]
    return rows, marker


def samples(history: History, sandbox: str, *, limit: int = 120) -> list[Row]:
    """The last ``limit`` samples of each service of ``sandbox``, oldest first."""
    return history.query(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY service ORDER BY at DESC) "
        "AS n FROM samples WHERE sandbox = ?) WHERE n <= ? ORDER BY service, at",
        (sandbox, limit))


def latest_samples(history: History) -> list[Row]:
    """The latest sample of every container, by sandbox."""
    return history.query(
        "SELECT s.* FROM samples s JOIN (SELECT container, MAX(at) AS at FROM samples "
        "GROUP BY container) l ON s.container = l.container AND s.at = l.at "
        "ORDER BY s.sandbox, s.service")


def status_rows(history: History, sandbox: str | None = None) -> list[Row]:
    if sandbox is None:
        return history.query("SELECT * FROM status ORDER BY sandbox, service")
    return history.query("SELECT * FROM status WHERE sandbox = ? ORDER BY service", (sandbox,))


def last_pass(history: History) -> Row | None:
    rows = history.query("SELECT * FROM passes ORDER BY id DESC LIMIT 1")
    return rows[0] if rows else None


def latest_deployments(history: History, sandbox: str) -> list[Row]:
    """The deployments of the last pass that changed anything in ``sandbox``."""
    return history.query(
        "SELECT d.*, p.started_at AS pass_started_at, p.status AS pass_status FROM deployments d"
        " JOIN passes p ON p.id = d.pass_id WHERE d.sandbox = ? AND d.pass_id = "
        "(SELECT MAX(pass_id) FROM deployments WHERE sandbox = ?) ORDER BY d.id",
        (sandbox, sandbox))


def deployment_events(history: History, deployment_ids: list[int]) -> list[Row]:
    if not deployment_ids:
        return []
    marks = ", ".join("?" for _ in deployment_ids)
    return history.query(
        f"{_EVENTS_WITH_DEPLOYMENT} WHERE e.deployment_id IN ({marks}) ORDER BY e.id",
        tuple(deployment_ids))


def recent_logs(history: History, sandbox: str, *, limit: int) -> list[Row]:
    """The last ``limit`` log lines and failures of ``sandbox``, oldest first."""
    rows = history.query(
        f"{_EVENTS_WITH_DEPLOYMENT} WHERE e.sandbox = ? AND (e.kind = 'log' OR"
        " e.event = 'DEPLOY_FAILED') ORDER BY e.id DESC LIMIT ?", (sandbox, limit))
    return rows[::-1]


def deployments(history: History, where: DeploymentFilter, *, limit: int) -> list[Row]:
    sql, params = where.clauses()
    trigger = "(SELECT p.trigger FROM passes p WHERE p.id = deployments.pass_id)"
    return history.query(
        f"SELECT *, {trigger} AS pass_trigger FROM deployments{sql} ORDER BY id DESC LIMIT ?",  # noqa: S608
        (*params, limit))


def recent_passes(history: History, *, limit: int = 10) -> list[Row]:
    """The last passes, with what started each (interval, state change, a webhook)."""
    return history.query("SELECT id, started_at, mode, trigger, status, summary FROM passes "
                         "ORDER BY id DESC LIMIT ?", (limit,))


def deployment(history: History, deployment_id: int) -> Row | None:
    rows = history.query("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
    return rows[0] if rows else None


def deployment_choices(history: History) -> dict[str, list[str]]:
    """The values each deployment filter can take, for the history page's menus."""
    return {
        column: [str(r["v"]) for r in history.query(
            f"SELECT DISTINCT {column} AS v FROM deployments"  # noqa: S608
            f" WHERE {column} IS NOT NULL ORDER BY v")]
        for column in ("sandbox", "repository", "status")
    }


def audit(history: History, *, sandbox: str | None, before: int | None,
          limit: int) -> list[Row]:
    where: list[str] = []
    params: list[Any] = []
    if sandbox:
        where.append("sandbox = ?")
        params.append(sandbox)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    sql = (" WHERE " + " AND ".join(where)) if where else ""
    return history.query(f"SELECT * FROM audit{sql} ORDER BY id DESC LIMIT ?",  # noqa: S608
                         (*params, limit))


def audit_sandboxes(history: History) -> list[str]:
    return [str(r["sandbox"]) for r in
            history.query("SELECT DISTINCT sandbox FROM audit ORDER BY sandbox")]
