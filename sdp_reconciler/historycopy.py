"""``sdp-reconcile history migrate``: copy one history into another, idempotently.

Every table of ``history.SCHEMA`` is copied row by row with its own ids (``INSERT ... ON
CONFLICT DO NOTHING``), so a second run copies only what the first did not (rows the source
gained since) and never a row twice. Afterwards the target's id sequences continue past the
copied ids, so writers on the target never reuse one. The target remembers its source (``meta``
``migrated_from``): a target that already holds another history is refused, since its ids would
collide with the source's. Both databases are opened with ``History`` (so both are migrated to
this program's schema first); the source is only read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import SCHEMA, History

BATCH = 500
MARK = "migrated_from"


def tables() -> list[str]:
    """The history's tables, in SCHEMA order (passes before the rows that name them)."""
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)


@dataclass(frozen=True)
class Copied:
    table: str
    read: int
    copied: int


def source_name(history: History) -> str:
    return f"{history.kind}:{history.location}"


def migrate(source: History, target: History) -> list[Copied]:
    """Copy every row of ``source`` that ``target`` does not hold yet; counts per table."""
    if source.kind == target.kind and str(source.location) == str(target.location):
        raise SdpError("--from and --to name the same history")
    name = source_name(source)
    mark = target.meta(MARK)
    if mark is None and target.query("SELECT id FROM passes LIMIT 1"):
        raise SdpError(f"{target.location} already holds a history that was not copied from "
                       f"{source.location}: migrate into an empty database (its ids would "
                       "collide with the source's)")
    if mark is not None and mark != name:
        raise SdpError(f"{target.location} was filled from {mark}, not from {name}: migrate "
                       "each history into a database of its own")
    target.set_meta(MARK, name)
    results = []
    for table in tables():
        read = copied = 0
        last: tuple[object, ...] | None = None
        order = _order(source, table)
        while True:
            rows = _page(source, table, order, last)
            if not rows:
                break
            read += len(rows)
            copied += target.insert_missing(table, rows)
            last = tuple(rows[-1][c] for c in order)
        if "id" in order:
            target.continue_ids_after_copy(table)
        results.append(Copied(table, read, copied))
    return results


def _order(history: History, table: str) -> tuple[str, ...]:
    columns = set(history.columns(table))
    if "id" in columns:
        return ("id",)
    keys = {"status": ("sandbox", "service"), "meta": ("key",), "sessions": ("token_sha256",)}
    if table not in keys:
        raise SdpError(f"history migrate does not know how to page table {table!r}")
    return keys[table]


def _page(history: History, table: str, order: tuple[str, ...],
          last: tuple[object, ...] | None) -> list[dict[str, object]]:
    columns = ", ".join(order)
    where = ""
    params: tuple[object, ...] = ()
    if last is not None:
        where = f" WHERE ({columns}) > ({', '.join('?' for _ in order)})"
        params = last
    return history.query(f"SELECT * FROM {table}{where} ORDER BY {columns} "  # noqa: S608
                         f"LIMIT {BATCH}", params)
