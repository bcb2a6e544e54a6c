"""PostgreSQL history databases for tests: one per test, made on the shared data server and
dropped afterwards, named with this run's resource prefix (``names.PREFIX``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from psycopg import sql

from sdp_testbed.dataservers import DataServers, ensure_started
from tests.support.data import drop_database, pg_admin
from tests.support.names import PREFIX


@dataclass(frozen=True)
class PgHistory:
    name: str
    url: str
    """postgresql://USER@HOST:PORT/DB, without the password"""
    password: str

    @property
    def env(self) -> dict[str, str]:
        """The environment a process needs to open the history (the password, never argv)."""
        return {"PGPASSWORD": self.password}


def servers() -> DataServers:
    try:
        return ensure_started(wait=False)
    except (SystemExit, OSError, TimeoutError) as e:
        pytest.fail(f"the PostgreSQL server is not available ({e}); start it with: "
                    "bash .ci/start-data-servers (after bash scripts/setup)")


def new_history_db(data: DataServers, tag: str = "h") -> PgHistory:
    name = f"{PREFIX}_{tag}_{uuid.uuid4().hex[:8]}"
    with pg_admin(data) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    server = data.postgresql
    return PgHistory(name=name, url=f"postgresql://{server.admin_user}@{server.host}:"
                                    f"{server.port}/{name}", password=server.admin_password)


def history_db(tag: str = "h") -> Iterator[PgHistory]:
    """A fixture body: a new database, dropped after the test."""
    data = servers()
    made = new_history_db(data, tag)
    try:
        yield made
    finally:
        drop_database(data, made.name)
