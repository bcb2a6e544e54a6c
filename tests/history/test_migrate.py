"""``sdp-reconcile history migrate``: a SQLite history copied into a real PostgreSQL database keeps
every row; a second run copies nothing twice; new ids continue after the copied ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sdp_reconciler.history import History, StatusRow
from sdp_reconciler.historycopy import tables
from tests.support.data import new_password
from tests.support.pghistory import PgHistory

BIN = Path(sys.executable).parent


def _fill(history: History, passes: int) -> None:
    for n in range(passes):
        pass_id = history.start_pass(mode="once", runner=f"ci-{n}", state_revision=f"r{n}")
        deployment = history.start_deployment(
            pass_id=pass_id, step_id=f"s{n}", sandbox=f"S{n % 3}", service="web", node="micro-1",
            resource="r", action="create service", reason="new", runner="ci", status="RUNNING")
        for line in range(5):
            history.add_event(pass_id=pass_id, deployment_id=deployment, sandbox=f"S{n % 3}",
                              kind="log", message=f"pass {n} line {line}: 100% ?")
        history.add_audit(deployment_id=deployment, user="jane", runner="ci", action="deploy",
                          sandbox=f"S{n % 3}", status="RUNNING", note="ok")
        history.finish_pass(pass_id, status="OK", summary=f"pass {n}")
    history.set_status([StatusRow(f"S{n}", "web", "micro-1", "InSync", "Healthy", "ok")
                        for n in range(3)], sandboxes={"S0", "S1", "S2"})
    history.set_meta("access_commit", "abc")
    history.add_session(f"{passes:064d}", username="viewer", created_at=1.0, expires_at=9e9)


def _dump(history: History) -> dict[str, list[dict[str, object]]]:
    return {table: sorted((dict(r) for r in history.query(f"SELECT * FROM {table}")),  # noqa: S608
                          key=repr) for table in tables()}


def _migrate(source: Path, pg: PgHistory, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "sdp-reconcile"), "history", "migrate", "--from", f"sqlite://{source}",
         "--to", pg.url, *extra], env={"PATH": "/usr/bin:/bin", **pg.env},
        capture_output=True, text=True, timeout=120)


def test_a_sqlite_history_moves_to_postgresql_with_every_row_and_only_once(
        tmp_path: Path, pg_history: PgHistory) -> None:
    path = tmp_path / "history.sqlite"
    source = History(path)
    _fill(source, 7)
    first = _migrate(path, pg_history)
    assert first.returncode == 0, first.stderr
    assert "events" in first.stdout and "35 copied" in first.stdout
    target = History(pg_history.url, env=pg_history.env)
    try:
        assert _dump(target) | {"meta": []} == _dump(source) | {"meta": []}
        meta = {r["key"]: r["value"] for r in target.query("SELECT * FROM meta")}
        assert meta["access_commit"] == "abc" and meta["migrated_from"] == f"sqlite:{path}"

        again = _migrate(path, pg_history)
        assert again.returncode == 0, again.stderr
        assert "copied 0 rows" in again.stdout
        assert len(target.query("SELECT id FROM events")) == 35

        _fill(source, 2)  # the source gained rows (a writer not yet stopped): only they come
        third = _migrate(path, pg_history)
        assert third.returncode == 0, third.stderr
        assert len(target.query("SELECT id FROM events")) == 45
        assert _dump(target)["events"] == _dump(source)["events"]

        # writers on the target continue after the copied ids
        last = max(r["id"] for r in target.query("SELECT id FROM events"))
        assert target.add_event(sandbox="S0", kind="log", message="after") == last + 1
    finally:
        target.close()
        source.close()


def test_a_target_holding_another_history_is_refused(tmp_path: Path,
                                                     pg_history: PgHistory) -> None:
    other = History(pg_history.url, env=pg_history.env)
    try:
        other.start_pass(mode="watch", runner="x", state_revision=None)
    finally:
        other.close()
    path = tmp_path / "history.sqlite"
    History(path).close()
    done = _migrate(path, pg_history)
    assert done.returncode == 1
    assert "already holds a history" in done.stderr and "empty database" in done.stderr


def test_a_password_given_on_the_command_line_is_refused_unseen(tmp_path: Path) -> None:
    canary = new_password("cli")
    path = tmp_path / "history.sqlite"
    History(path).close()
    done = subprocess.run(
        [str(BIN / "sdp-reconcile"), "history", "migrate", "--from", str(path), "--to",
         f"postgresql://sdp:{canary}@127.0.0.1:17432/x"], capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "command line" in done.stderr
    assert canary not in done.stdout + done.stderr
