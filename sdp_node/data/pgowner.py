"""Handing a fresh clone's objects to the sandbox's role, so its migrations can change them.

``CREATE DATABASE ... TEMPLATE`` copies the template's objects with their owners. A sandbox's
role must own its schemas, tables, sequences, views, functions and types (a branch's
migrations ``ALTER`` them), so after a copy the agent changes each object's owner, one
``ALTER ... OWNER TO`` at a time in one transaction. It never uses ``REASSIGN OWNED``, which
would also hand over the template database itself and any other shared object of the old
owner. Objects of extensions stay with the extension, the system schemas are not touched.

PostgreSQL lets the administrator do this when it owns the objects (create the template as
SDP's administrator, docs/infra.md) or is a member of their owner; otherwise the error names
the object, its owner and that remedy. A restored dump needs none of this: ``pg_restore
--role`` creates every object as the sandbox's role.
"""

from __future__ import annotations

from psycopg import errors, sql

from sdp_node.data.postgres import Conn, DataServerError, pg_error

# Objects of user schemas (not pg_*, not information_schema) that belong to no extension.
SCHEMAS = """
SELECT quote_ident(n.nspname), pg_get_userbyid(n.nspowner) FROM pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND n.nspowner <> 'pg_database_owner'::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_namespace'::regclass
                  AND e.objid = n.oid AND e.deptype = 'e')
"""
# A sequence owned by a column (serial, identity) follows its table, so it is left out.
RELATIONS = """
SELECT c.oid::regclass::text, c.relkind, pg_get_userbyid(c.relowner) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d
           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
             AND d.deptype IN ('a', 'i')))
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                  AND e.objid = c.oid AND e.deptype = 'e')
"""
ROUTINES = """
SELECT p.oid::regprocedure::text, p.prokind, pg_get_userbyid(p.proowner) FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass
                  AND e.objid = p.oid AND e.deptype = 'e')
"""
TYPES = """
SELECT t.oid::regtype::text, t.typtype, pg_get_userbyid(t.typowner) FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND (t.typtype IN ('d', 'e', 'r')
       OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_type'::regclass
                  AND e.objid = t.oid AND e.deptype = 'e')
"""

_RELATION_KEYWORDS = {
    "r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
    "f": "FOREIGN TABLE", "S": "SEQUENCE",
}
_ROUTINE_KEYWORDS = {"f": "FUNCTION", "p": "PROCEDURE", "a": "AGGREGATE", "w": "FUNCTION"}
_TYPE_KEYWORDS = {"d": "DOMAIN", "e": "TYPE", "r": "TYPE", "c": "TYPE"}


def _statements(connection: Conn, role: str) -> list[tuple[sql.Composed, str, str]]:
    """Every ``ALTER ... OWNER TO role`` the clone needs, with the object and its owner."""
    target = sql.Identifier(role)
    out: list[tuple[sql.Composed, str, str]] = []
    # The names come from regclass/regprocedure/regtype/quote_ident: already quoted SQL.
    for name, owner in connection.execute(SCHEMAS).fetchall():
        if owner != role:
            out.append((sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.SQL(name), target),
                        f"schema {name}", owner))
    for query, keywords in ((RELATIONS, _RELATION_KEYWORDS), (ROUTINES, _ROUTINE_KEYWORDS),
                            (TYPES, _TYPE_KEYWORDS)):
        for name, kind, owner in connection.execute(query).fetchall():
            if owner != role:
                keyword = keywords[kind]
                out.append((
                    sql.SQL("ALTER {} {} OWNER TO {}").format(
                        sql.SQL(keyword), sql.SQL(name), target),
                    f"{keyword.lower()} {name}", owner,
                ))
    return out


def hand_over(connection: Conn, role: str, *, admin: str) -> int:
    """Make ``role`` the owner of every user object of the database ``connection`` is on;
    the number of objects changed. One transaction: all or nothing."""
    statements = _statements(connection, role)
    with connection.transaction():
        for statement, what, owner in statements:
            try:
                connection.execute(statement)
            except errors.InsufficientPrivilege as e:
                raise DataServerError(
                    f"PostgreSQL: the clone's {what} is owned by {owner}, which {admin} cannot "
                    f"hand over to {role}: create the template as {admin} (docs/infra.md), or "
                    f"GRANT {owner} TO {admin}"
                ) from e
            except errors.Error as e:
                raise pg_error(f"handing {what} over to {role}", e) from e
    return len(statements)


__all__ = ["hand_over"]
