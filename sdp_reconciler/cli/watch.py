"""``sdp-reconcile watch``: reconcile on every state change and on an interval; serve the page.

* A change under the state directory (watchfiles, debounced; the reconciler's own
  ``ports.yaml`` writes ignored) triggers a pass at once; otherwise a pass runs every
  ``interval`` seconds, which catches moved branch heads and drift.
* With ``--remote URL`` the state directory is SDP's checkout of that repository, kept at the
  remote branch head before each pass (``statesync``), so a push reaches it. Its files are
  not watched: only SDP's own fast-forwards change them, and the pass that fetched already
  applies what it fetched (a second pass would only repeat it).
* ``POST /hooks/bitbucket`` on the page's listener (``web.hooks``) takes Bitbucket push
  webhooks: a push to the state repository's branch fetches it and runs a full pass; a push
  to a service or gateway repository runs a pass scoped to the sandboxes tracking that branch
  (``scope.Tracking``: only their nodes are observed); a push nothing tracks runs nothing.
  A push starts its pass at once (no debounce on the first of a burst); the triggers
  arriving during a pass coalesce into one pass after it (``scope.coalesce``), so the last
  push is never lost. The
  interval pass stays, as the safety net for drift and missed hooks.
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
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from msgspec import Struct
from watchfiles import Change, watch

from sdp_reconciler.apply.reconcile import PassResult, prepare, run
from sdp_reconciler.apply.statesync import StateSync
from sdp_reconciler.errors import SdpError, StateError
from sdp_reconciler.history import History
from sdp_reconciler.historydb import Location
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.planner.scope import Tracking, Trigger, coalesce
from sdp_reconciler.state.hostconfig import HostConfig, find_host_config, host_rules
from sdp_reconciler.state.loading import PORTS_FILE, load_state
from sdp_reconciler.web import WebServer, create_app
from sdp_reconciler.web.bitbucket import Push
from sdp_reconciler.web.hooks import BitbucketHook, HookAnswer

Report = Callable[[str], None]


class WatchOptions(Struct, frozen=True):
    state_dir: Path
    history_path: Path | Location
    interval: float = 60.0
    listen: str | None = "127.0.0.1:3452"
    remote: str | None = None
    branch: str = "main"
    allow_prune: bool = False
    debounce_ms: int = 300
    hook_debounce_ms: int = 0
    """how long a webhook's pass waits for the rest of a burst of pushes (at most 1 s); none
    by default: the first push of a burst is on its way live at once, and the pushes that
    arrive during its pass are folded into the next one"""


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
        self.triggers: queue.Queue[Trigger] = queue.Queue()
        self.passes = 0
        self.tracking = Tracking()
        self.history: History | None = None
        self._lock = threading.Lock()
        self._snapshot = Path(tempfile.mkdtemp(prefix="sdp-last-valid-state-"))
        self._have_snapshot = False
        self._last_directory: Path | None = None

    # -- inputs -----------------------------------------------------------------------------------

    def _watch_files(self) -> None:
        for changes in watch(self.options.state_dir, watch_filter=_state_filter,
                             debounce=self.options.debounce_ms, step=10,
                             stop_event=self.stop, raise_interrupt=False):
            paths = sorted({Path(p).name for _, p in changes})
            self.triggers.put(Trigger("state", f"state changed ({', '.join(paths)})"))

    def receive_push(self, push: Push, event: str) -> HookAnswer:
        """What a signed push means (called from the listener's thread): recorded, and a
        pass queued when the push moved something SDP deploys."""
        answer, trigger = self._classify(push)
        history = self.history
        if history is not None:
            history.add_hook(sender=push.sender, event=event, repository=push.full_name,
                             branches=list(push.branches), result=answer.result,
                             detail=answer.detail)
        self.report(f"webhook {push.describe()}: {answer.result}: {answer.detail}")
        if trigger is not None:
            self.triggers.put(trigger)
        return answer

    def _classify(self, push: Push) -> tuple[HookAnswer, Trigger | None]:
        remote, branch = self.options.remote, self.options.branch
        if remote is not None and is_repository(push, remote):
            if branch not in push.branches:
                return HookAnswer("ignored", f"the state follows branch {branch!r}"), None
            text = f"webhook: state {push.full_name}@{branch}"
            return HookAnswer("queued", "a full pass after fetching the state"), \
                Trigger("webhook", text)
        name = self._sdp_repository(push)
        with self._lock:
            if not self.tracking.known:
                text = f"webhook: {name}@{','.join(push.branches)}"
                return HookAnswer("queued", "a full pass: no pass has planned yet"), \
                    Trigger("webhook", text)
            if name not in self.tracking.repositories():
                return HookAnswer("ignored", f"no sandbox deploys repository {name!r}"), None
            scope = self.tracking.scope_for(name, push.branches)
        if not scope.sandboxes:
            return HookAnswer("ignored", f"no sandbox tracks {name}@"
                              f"{', '.join(push.branches) or '(no branch)'}"), None
        text = f"webhook: {name}@{','.join(push.branches)}"
        return HookAnswer("queued", f"a pass over {scope.describe()}"), \
            Trigger("webhook", text, scope=scope, sync=False)

    def _sdp_repository(self, push: Push) -> str:
        aliases = self.host.model.webhooks.repositories if self.host is not None else {}
        return aliases.get(push.full_name) or aliases.get(push.slug) or push.slug

    @property
    def host(self) -> HostConfig | None:
        try:
            return find_host_config(self.env)
        except SdpError:
            return None

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

    def _valid_state_dir(self, history: History, trigger: Trigger) -> Path | None:
        """The state directory if valid (and snapshot it), else the last valid snapshot."""
        try:
            load_state(self.options.state_dir, host=host_rules(self.env))
        except StateError as e:
            pass_id = history.start_pass(mode="watch", runner=creds.runner(self.env),
                                         state_revision=None, trigger=trigger.describe())
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

    def one_pass(self, history: History, trigger: Trigger) -> None:
        self.passes += 1
        self.report(f"pass {self.passes}: {trigger.describe()}")
        if trigger.sync:
            try:
                self._sync_remote()
            except SdpError as e:
                self.report(f"state: {e}")
        # A scoped pass (a service push) neither fetched nor saw a file change: the state
        # is the one the last pass judged. Any change to it triggers a full pass.
        if trigger.scope is not None and self._last_directory is not None:
            directory: Path | None = self._last_directory
        else:
            directory = self._valid_state_dir(history, trigger)
            self._last_directory = directory
        if directory is None:
            return
        try:
            prepared = prepare(directory, env=self.env, report=self.report, history=history,
                               scope=trigger.scope)
        except SdpError as e:
            self.report(f"pass {self.passes}: {e}")
            return
        with self._lock:
            self.tracking.update(prepared.sandboxes, prepared.placements,
                                 full=trigger.scope is None,
                                 data_nodes=[(d.sandbox, d.node)
                                             for d in prepared.data.services.values()])
        try:
            result = run(prepared, history=history, mode="watch",
                         allow_prune=self.options.allow_prune, report=self.report,
                         env=self.env, trigger=trigger.describe())
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

    def _next_trigger(self) -> Trigger:
        """The next pass's trigger: the interval's, or a burst of triggers coalesced."""
        try:
            first = self.triggers.get(timeout=self.options.interval)
        except queue.Empty:
            return Trigger("interval", f"every {self.options.interval:g}s")
        burst = [first]
        window = self.options.hook_debounce_ms / 1000
        if first.kind == "webhook" and window > 0:  # a push may come with more: wait for them
            deadline = time.monotonic() + 1.0
            while not self.stop.is_set():
                try:
                    burst.append(self.triggers.get(
                        timeout=max(0.0, min(window, deadline - time.monotonic()))))
                except queue.Empty:
                    break
        while not self.triggers.empty():  # fold the rest of a burst into one pass
            burst.append(self.triggers.get_nowait())
        return coalesce(burst)

    def hook(self) -> BitbucketHook:
        """The webhook endpoint of this watcher, with the host's secret."""
        host = self.host
        try:
            secret = creds.webhook_secret(host, self.env)
        except SdpError as e:
            self.report(f"webhooks: {e}; refusing every webhook")
            secret = None
        if secret is None:
            self.report("webhooks: no secret (SDP_WEBHOOK_SECRET or webhooks.secret in "
                        "reconciler.yaml): POST /hooks/bitbucket refuses every request")
        return BitbucketHook(secret=secret, receive=self.receive_push)

    def run_forever(self) -> int:
        history = History(self.options.history_path)
        self.history = history
        page = start_page(self.options, self.env, self.report, hook=self.hook()) \
            if self.options.listen else None
        # With --remote the checkout appears with the first sync; watchfiles cannot watch a
        # directory that does not exist yet (its thread would die, unnoticed).
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        if self.options.remote is None:
            threading.Thread(target=self._watch_files, name="sdp-watch-files",
                             daemon=True).start()
        try:
            trigger = Trigger("start", "start")
            while not self.stop.is_set():
                self.one_pass(history, trigger)
                trigger = self._next_trigger()
        finally:
            self.stop.set()
            if page is not None:
                page.stop()
            self.history = None
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


def is_repository(push: Push, url: str) -> bool:
    """Whether the push is to the repository at ``url`` (by clone link, else by name)."""
    def bare(link: str) -> str:  # host[:port]/path, without scheme, user and .git
        parts = urlsplit(link if "://" in link else f"//{link}")
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.hostname or ''}{port}{parts.path}".rstrip("/").removesuffix(
            ".git").lower()

    wanted = bare(url)
    if any(bare(link) == wanted for link in push.clone_urls):
        return True
    tail = wanted.rpartition("/")[2]
    return tail == push.slug.lower() or wanted.endswith("/" + push.full_name.lower())


def start_page(options: WatchOptions, env: Mapping[str, str] | None,
               report: Report, hook: BitbucketHook | None = None) -> WebServer:
    """The status page on a uvicorn server in a thread; returns once it listens."""
    assert options.listen is not None
    app = create_app(state_dir=options.state_dir, history_path=options.history_path, env=env,
                     extra_routes=[hook.route()] if hook is not None else [])
    # For the listener's other readers (a /metrics route): how each webhook request ended.
    app.state.hook_counters = hook.counters if hook is not None else None
    page = WebServer(app, options.listen)
    page.start()
    report(f"status page on http://{options.listen}/")
    return page


def main_loop(options: WatchOptions, env: Mapping[str, str] | None = None) -> int:
    watcher = Watcher(options, env=env, report=lambda m: print(m, flush=True))

    def stop(signum: int, frame: FrameType | None) -> None:
        watcher.stop.set()
        watcher.triggers.put(Trigger("stop", "stopping"))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return watcher.run_forever()
