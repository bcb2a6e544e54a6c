"""The history over months: dead passes are marked, old rows go, a newer schema is refused."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import MIGRATIONS, History, Retention


def test_a_pass_whose_process_was_killed_is_marked_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    # A real reconciler process that starts a pass and a deployment, then is killed.
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from sdp_reconciler.history import History\n"
        "h = History(Path(sys.argv[1]))\n"
        "p = h.start_pass(mode='once', runner='ci', state_revision=None)\n"
        "h.start_deployment(pass_id=p, step_id='s', sandbox='S', service='a', node='n',\n"
        "                   resource='r', action='create service', reason='new', runner='ci',\n"
        "                   status='RUNNING')\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "started"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    history = History(path)
    try:
        assert history.query("SELECT status FROM passes")[0]["status"] == "RUNNING"
        history.start_pass(mode="once", runner="ci", state_revision=None)
        killed, current = history.query("SELECT status, summary FROM passes ORDER BY id")
        assert killed["status"] == "INTERRUPTED"
        assert f"process {child.pid}" in killed["summary"]
        assert current["status"] == "RUNNING"  # this one is alive: left alone
        deployment = history.query("SELECT status, completed_at FROM deployments")[0]
        assert deployment["status"] == "INTERRUPTED" and deployment["completed_at"]
    finally:
        history.close()


def _age(path: Path, days: int) -> None:
    with sqlite3.connect(path) as db:
        stamp = f"datetime('now', '-{days} days')"
        db.execute(f"UPDATE passes SET started_at = {stamp}")  # noqa: S608
        db.execute(f"UPDATE deployments SET started_at = {stamp}")  # noqa: S608
        db.execute(f"UPDATE events SET at = {stamp}")  # noqa: S608
        db.execute(f"UPDATE audit SET at = {stamp}")  # noqa: S608
        db.execute(f"UPDATE hooks SET at = {stamp}")  # noqa: S608
        db.execute("UPDATE expiry_warnings SET expires_at = "  # noqa: S608
                   f"strftime('%Y-%m-%dT%H:%M:%S+00:00', {stamp})")


def _fill(history: History) -> None:
    pass_id = history.start_pass(mode="once", runner="ci", state_revision=None)
    deployment = history.start_deployment(
        pass_id=pass_id, step_id="s", sandbox="S", service="a", node="n", resource="r",
        action="create service", reason="new", runner="ci", status="RUNNING")
    history.add_event(pass_id=pass_id, deployment_id=deployment, sandbox="S", kind="log",
                      message="line")
    history.add_audit(deployment_id=deployment, runner="ci", action="create service",
                      sandbox="S", status="SUCCESS")
    history.add_hook(sender="server", event="repo:refs_changed", repository="P/account",
                     branches=["main"], result="queued")
    history.claim_expiry_warning(f"S-{pass_id}", datetime.now(UTC))
    history.finish_pass(pass_id, status="CONVERGED", summary="")


def _counts(history: History) -> dict[str, int]:
    return {t: history.query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"]  # noqa: S608
            for t in ("passes", "deployments", "events", "audit", "hooks", "expiry_warnings")}


def test_old_deployments_go_and_the_audit_stays_longer(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    history = History(path)
    try:
        _fill(history)
        _age(path, days=100)
        _fill(history)  # a recent pass
        removed = history.prune(Retention(deployments_days=90, audit_days=365), force=True)
        assert removed == {"events": 1, "deployments": 1, "audit": 0, "passes": 1, "hooks": 1,
                           "expiry_warnings": 1}
        assert _counts(history) == {"passes": 1, "deployments": 1, "events": 1, "audit": 2,
                                    "hooks": 1, "expiry_warnings": 1}
        _age(path, days=400)
        assert history.prune(Retention(deployments_days=90, audit_days=365)) == {}, \
            "at most once an hour"
        history.prune(Retention(deployments_days=90, audit_days=365), force=True)
        assert _counts(history) == {"passes": 0, "deployments": 0, "events": 0, "audit": 0,
                                    "hooks": 0, "expiry_warnings": 0}
    finally:
        history.close()


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    History(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(SdpError, match=r"newer than this sdp-reconcile knows.*upgrade"):
        History(path)


def test_an_old_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as db:  # the first schema: passes without host and pid
        db.execute("CREATE TABLE passes (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT "
                   "NOT NULL, finished_at TEXT, mode TEXT NOT NULL, runner TEXT NOT NULL, "
                   "state_revision TEXT, status TEXT NOT NULL DEFAULT 'RUNNING', summary TEXT "
                   "NOT NULL DEFAULT '')")
        db.execute("INSERT INTO passes (started_at, mode, runner) VALUES "
                   "('2026-01-01T00:00:00+00:00', 'once', 'ci')")
    history = History(path)
    try:
        history.start_pass(mode="once", runner="ci", state_revision=None)
        rows = history.query("SELECT status, host FROM passes ORDER BY id")
        assert rows[0]["status"] == "INTERRUPTED"  # nobody finished it for months
        assert rows[1]["host"]
    finally:
        history.close()
