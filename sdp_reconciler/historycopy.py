"""``sdp-reconcile history migrate``: copy one history into another, idempotently.

Every table of ``history.SCHEMA`` is copied row by row with its own ids (tables with an ``id``
in pages of ``BATCH`` by id; the small tables keyed by name, such as ``status``, whole), with
``INSERT ... ON CONFLICT DO NOTHING``, so a second run copies only what the first did not (rows
the source gained since) and never a row twice. Afterwards the target's id sequences continue
past the copied ids, so writers on the target never reuse one. The target remembers its source
(``meta`` ``migrated_from``): a target that already holds another history is refused, since its
ids would collide with the source's. Both databases are opened with ``History`` (so both are
migrated to this program's schema first); the source is only read.
"""

from __future__ import annotations

import re

from msgspec import Struct

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import SCHEMA, History

BATCH = 500
MARK = "migrated_from"


def tables() -> list[str]:
    """The history's tables, in SCHEMA order (passes before the rows that name them)."""
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)


class Copied(Struct, frozen=True):
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
        if "id" not in source.columns(table):
            # status, meta, sessions and the like: small, keyed by name; read whole
            rows = source.query(f"SELECT * FROM {table}")  # noqa: S608
            results.append(Copied(table, len(rows), target.insert_missing(table, rows)
                                  if rows else 0))
            continue
        read = copied = 0
        last = 0
        while True:
            rows = source.query(f"SELECT * FROM {table} WHERE id > ? ORDER BY id "  # noqa: S608
                                f"LIMIT {BATCH}", (last,))
            if not rows:
                break
            read += len(rows)
            copied += target.insert_missing(table, rows)
            last = int(rows[-1]["id"])
        target.continue_ids_after_copy(table)
        results.append(Copied(table, read, copied))
    return results
