"""``sdp-reconcile watch``: reconcile on every state change and on an interval; serve the page.

* A change under the state directory (watchfiles, debounced; the reconciler's own
  ``ports.yaml`` writes ignored) triggers a pass at once; otherwise a pass runs every
  ``interval`` seconds, which catches moved branch heads and drift.
* With ``--remote URL`` the state directory is SDP's checkout of that repository, kept at the
  remote branch head before each pass (``statesync``), so a push reaches it.
* An invalid state applies nothing from it: the error is recorded (the page shows it) and the
  pass converges to the last valid state instead, so drift keeps being healed.
* The status page runs in the same process (``web.app.create_app``), default 127.0.0.1:3452.
SIGTERM / SIGINT stop it between passes.
"""

from __future__ import annotations

import queue
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from watchfiles import Change, watch

from sdp_reconciler.apply.reconcile import PassResult, prepare, run
from sdp_reconciler.apply.statesync import StateSync
from sdp_reconciler.errors import SdpError, StateError
from sdp_reconciler.history import History
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.state.hostconfig import host_rules
from sdp_reconciler.state.loading import PORTS_FILE, load_state
from sdp_reconciler.web import WebServer, create_app

Report = Callable[[str], None]


@dataclass(frozen=True)
class WatchOptions:
    state_dir: Path
    history_path: Path
    interval: float = 60.0
    listen: str | None = "127.0.0.1:3452"
    remote: str | None = None
    branch: str = "main"
    allow_prune: bool = False
    debounce_ms: int = 300


def _state_filter(change: Change, path: str) -> bool:
    name = Path(path).name
    return name != PORTS_FILE and not name.startswith(".") and "/.git/" not in path


class Watcher:
    def __init__(self, options: WatchOptions, *, env: Mapping[str, str] | None = None,
                 report: Report = print) -> None:
        self.options = options
        self.env = env
        self.report = report
        self.stop = threading.Event()
        self.triggers: queue.Queue[str] = queue.Queue()
        self.passes = 0
        self._snapshot = Path(tempfile.mkdtemp(prefix="sdp-last-valid-state-"))
        self._have_snapshot = False

    # -- inputs -----------------------------------------------------------------------------------

    def _watch_files(self) -> None:
        for changes in watch(self.options.state_dir, watch_filter=_state_filter,
                             debounce=self.options.debounce_ms, step=10,
                             stop_event=self.stop, raise_interrupt=False):
            paths = sorted({Path(p).name for _, p in changes})
            self.triggers.put(f"state changed ({', '.join(paths)})")

    def _sync_remote(self) -> None:
        if self.options.remote is None:
            return
        try:
            credentials = creds.git_credentials(self.env)
        except SdpError as e:  # a public repository needs none; a private one then says 401
            self.report(f"state: fetching without git credentials: {e}")
            credentials = None
        moved = StateSync(self.options.state_dir, self.options.remote, self.options.branch,
                          credentials).sync()
        if moved:
            self.report(f"state: fast-forwarded to {moved[:7]}")

    def _valid_state_dir(self, history: History) -> Path | None:
        """The state directory if valid (and snapshot it), else the last valid snapshot."""
        try:
            load_state(self.options.state_dir, host=host_rules(self.env))
        except StateError as e:
            pass_id = history.start_pass(mode="watch", runner=creds.runner(self.env),
                                         state_revision=None)
            history.finish_pass(pass_id, status="INVALID_STATE", summary=str(e))
            self.report(f"state is invalid; applying nothing from it:\n{e}")
            if self._have_snapshot:
                self.report("converging to the last valid state meanwhile")
                return self._snapshot
            return None
        shutil.rmtree(self._snapshot, ignore_errors=True)
        shutil.copytree(self.options.state_dir, self._snapshot,
                        ignore=shutil.ignore_patterns(".git"))
        self._have_snapshot = True
        return self.options.state_dir

    # -- the loop ---------------------------------------------------------------------------------

    def one_pass(self, history: History, reason: str) -> None:
        self.passes += 1
        self.report(f"pass {self.passes}: {reason}")
        try:
            self._sync_remote()
        except SdpError as e:
            self.report(f"state: {e}")
        directory = self._valid_state_dir(history)
        if directory is None:
            return
        try:
            prepared = prepare(directory, env=self.env, report=self.report, history=history)
        except SdpError as e:
            self.report(f"pass {self.passes}: {e}")
            return
        try:
            result = run(prepared, history=history, mode="watch",
                         allow_prune=self.options.allow_prune, report=self.report,
                         env=self.env)
            if result.refused:
                self.report(f"pass {self.passes}: refused: {result.refused}")
            else:
                for line in change_lines(result):
                    self.report(f"pass {self.passes}: {line}")
                summary = "; then ".join(r.plan.summary() for r in result.rounds)
                self.report(f"pass {self.passes}: {summary} "
                            f"{'converged' if result.converged else 'not converged'}")
        except SdpError as e:
            self.report(f"pass {self.passes}: {e}")
        finally:
            prepared.close()

    def run_forever(self) -> int:
        history = History(self.options.history_path)
        page = start_page(self.options, self.env, self.report) if self.options.listen else None
        # With --remote the checkout appears with the first sync; watchfiles cannot watch a
        # directory that does not exist yet (its thread would die, unnoticed).
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        watcher = threading.Thread(target=self._watch_files, name="sdp-watch-files",
                                   daemon=True)
        watcher.start()
        try:
            reason = "start"
            while not self.stop.is_set():
                self.one_pass(history, reason)
                try:
                    reason = self.triggers.get(timeout=self.options.interval)
                    while not self.triggers.empty():  # fold a burst into one pass
                        self.triggers.get_nowait()
                except queue.Empty:
                    reason = f"every {self.options.interval:g}s"
        finally:
            self.stop.set()
            if page is not None:
                page.stop()
            history.close()
            shutil.rmtree(self._snapshot, ignore_errors=True)
        return 0


def change_lines(result: PassResult) -> list[str]:
    """One line per change a pass applied: symbol, what, reason, and how it went."""
    lines = []
    for round_ in result.rounds:
        if round_ is not result:
            lines.append("second round (ports freed by removals):")
        for change in round_.plan.changes:
            outcome = round_.outcome.results.get(change.step_id)
            if outcome is not None and outcome.ok:
                how = "done"
            else:
                why = outcome.message if outcome else round_.outcome.errors.get(
                    change.step_id, "")
                how = f"FAILED: {why}" if why else "FAILED"
            lines.append(f"{change.action.symbol} {change.describe()}: {change.reason} ({how})")
        for problem in round_.plan.problems:
            lines.append(f"problem: {problem}")
    return lines


def start_page(options: WatchOptions, env: Mapping[str, str] | None,
               report: Report) -> WebServer:
    """The status page on a uvicorn server in a thread; returns once it listens."""
    assert options.listen is not None
    app = create_app(state_dir=options.state_dir, history_path=options.history_path, env=env)
    page = WebServer(app, options.listen)
    page.start()
    report(f"status page on http://{options.listen}/")
    return page


def main_loop(options: WatchOptions, env: Mapping[str, str] | None = None) -> int:
    watcher = Watcher(options, env=env, report=lambda m: print(m, flush=True))

    def stop(signum: int, frame: FrameType | None) -> None:
        watcher.stop.set()
        watcher.triggers.put("stopping")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return watcher.run_forever()
