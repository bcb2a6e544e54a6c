"""The demo's optional data part (``bash scripts/demo --with-data``): an INFRA agent and a
sandbox with its own clone of a QA database.

On the data servers of ``.ci/start-data-servers`` (started by ``scripts/setup``): a template
database ``demo_qa_snapshot`` made once, as docs/infra.md says to make one (owned by SDP's
administrator, ``IS_TEMPLATE``, no connections, no ``CONNECT`` for ``PUBLIC``) holding an
``accounts`` table whose last row is ``SNAPSHOT_ROW``; the agent ``infra-1`` on
127.0.0.1:3455 offering it as source ``qa-snapshot``; the account repository's branch
``feature/db``, a Go service that answers that row on ``/row`` (``go_pq.py``); and, in the
demo's state copy, the INFRA node and the sandbox ``QA-WITH-DB``. ``down`` drops what the
demo's INFRA agent made (its markers name the installation ``demo``) and the template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from sdp_node.data.markers import Marker
from sdp_node.naming import STAGING_SUFFIX
from sdp_testbed.dataservers import DataServers, ensure_started
from sdp_testbed.go_pq import row_reader_files
from sdp_testbed.repos import branch_head, commit_files

INFRA_NODE = "infra-1"
INFRA_PORT = 3455
TEMPLATE = "demo_qa_snapshot"
SNAPSHOT_ROW = "demo-snapshot-row@qa.invalid"
SANDBOX = "QA-WITH-DB"
NODES_ENTRY = (
    f"  - name: {INFRA_NODE}\n"
    "    type: INFRA                 # over .ci/start-data-servers (demo --with-data)\n"
    f"    agent_url: http://127.0.0.1:{INFRA_PORT}\n"
    "    address: host.docker.internal\n"
    "    public_address: 127.0.0.1\n"
)
SANDBOX_YAML = f"""\
# The demo's sandbox with its own database: a clone of qa-snapshot made before account starts;
# account (branch feature/db) reads its last row through DB_HOST, DB_PORT, DB_NAME, DB_USER
# and DB_PASSWORD. The qa environment is left out: it sets DB_HOST itself.
sandbox: {SANDBOX}
extends: QA-DEFAULT
environment: null
services:
  account: {{branch: feature/db}}
data:
  db: {{postgresql: {{from: qa-snapshot}}}}
"""


def _admin(servers: DataServers, database: str = "postgres") -> psycopg.Connection[Any]:
    server = servers.postgresql
    return psycopg.connect(host=server.host, port=server.port, user=server.admin_user,
                           password=server.admin_password, dbname=database, autocommit=True,
                           application_name="sdp-demo")


def make_template(servers: DataServers) -> None:
    """The demo's template database, made once."""
    with _admin(servers) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (TEMPLATE,)).fetchone():
            return
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with _admin(servers, TEMPLATE) as connection:
        connection.execute("CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL)")
        connection.execute("INSERT INTO accounts (email) SELECT 'user' || g || '@qa.invalid' "
                           "FROM generate_series(1, 100) g")
        connection.execute("INSERT INTO accounts (email) VALUES (%s)", (SNAPSHOT_ROW,))
    with _admin(servers) as connection:
        name = sql.Identifier(TEMPLATE)
        connection.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true ALLOW_CONNECTIONS false")
                           .format(name))
        connection.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(name))


def node_data(servers: DataServers) -> dict[str, Any]:
    """``data:`` of the demo INFRA agent's node.yaml (the password as a file reference)."""
    server = servers.postgresql
    return {"postgresql": {
        "host": server.host, "port": server.port, "admin_user": server.admin_user,
        "admin_password": {"file": str(server.admin_password_file)},
        "advertise_host": "host.docker.internal",
        "sources": {"qa-snapshot": {"template": TEMPLATE,
                                    "description": "the demo's QA data"}},
    }}


def fill_repository(git_root: Path) -> None:
    account = git_root / "account.git"
    if branch_head(account, "feature/db") is None:
        commit_files(account, branch="feature/db", base="main", message="account: reads its db",
                     files=row_reader_files(service="account", revision="account feature/db"))


def prepare() -> DataServers:
    servers = ensure_started(wait=True)
    make_template(servers)
    return servers


def add_to_state(state: Path) -> bool:
    """Add the INFRA node and the sandbox to the demo's state copy; False if already there."""
    nodes = state / "nodes.yaml"
    text = nodes.read_text()
    if f"name: {INFRA_NODE}" in text:
        return False
    nodes.write_text(text.rstrip("\n") + "\n" + NODES_ENTRY)
    (state / "sandboxes" / f"{SANDBOX}.yaml").write_text(SANDBOX_YAML)
    return True


def drop_demo_data(installation: str) -> None:
    """Drop the databases and roles the demo's INFRA agent made (by their markers), and the
    demo's template. Nothing else is looked at."""
    servers = DataServers.at()
    try:
        connection = _admin(servers)
    except (psycopg.Error, OSError):
        return  # the servers are not running: nothing of the demo's can be there now
    with connection:
        for role, comment in connection.execute(
                "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles").fetchall():
            marker = Marker.decode(comment)
            if marker is None or marker.instance != installation or marker.node != INFRA_NODE:
                continue
            for database in (role + STAGING_SUFFIX, role):
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database)))
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (TEMPLATE,)).fetchone():
            connection.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(
                sql.Identifier(TEMPLATE)))
            connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(TEMPLATE)))


__all__ = ["INFRA_NODE", "INFRA_PORT", "SANDBOX", "SNAPSHOT_ROW", "add_to_state",
           "drop_demo_data", "fill_repository", "node_data", "prepare"]
