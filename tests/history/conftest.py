"""Fixtures of the history tests: each test's store on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pghistory import PgHistory, history_db


@pytest.fixture
def pg_history() -> Iterator[PgHistory]:
    yield from history_db()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest,
             tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(location, environment) of an empty history on each backend."""
    if request.param == "sqlite":
        yield str(tmp_path / "history.sqlite"), {}
    else:
        yield from ((db.url, db.env) for db in history_db())
