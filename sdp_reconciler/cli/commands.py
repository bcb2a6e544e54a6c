"""The reconciler's commands: plan, --once, restart (watch and serve live in loop.py / web/).

Each returns the process exit status: ``plan`` 0 = nothing to do, 2 = changes pending,
1 = error or problems; ``--once`` 0 only when everything converged, else 2 (1 on an error
that stopped the pass). Progress goes to stderr as it happens; results to stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from sdp_node.protocol import OperationEvent
from sdp_reconciler.apply.reconcile import (
    PassResult,
    Prepared,
    prepare,
    reset_targets,
    restart_targets,
    run,
)
from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History
from sdp_reconciler.paths import DEFAULT_HISTORY as DEFAULT_HISTORY
from sdp_reconciler.paths import history_location as history_location
from sdp_reconciler.paths import history_path, state_dir
from sdp_reconciler.planner.plan import Change
from sdp_reconciler.statuses import Sync


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_plan(args: argparse.Namespace) -> int:
    prepared = prepare(state_dir(args), report=_say)
    try:
        the_plan = prepared.plan
        print(the_plan.to_json() if args.json else the_plan.render())
        if the_plan.problems:
            return 1
        return 0 if the_plan.empty else 2
    finally:
        prepared.close()


class Progress:
    """Prints each stage as the agents report it: ``✓ git fetch``, ``✗ go build: ...``."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out

    def __call__(self, change: Change, event: OperationEvent) -> None:
        head = f"  {change.node:<10} {change.resource:<40}"
        line = None
        if event.kind == "event" and event.event is not None:
            name = event.event.value
            if name.endswith("_COMPLETED") and event.stage is not None:
                line = f"{head} ✓ {event.stage.value}"
            elif name == "DEPLOY_FAILED":
                line = f"{head} ✗ {event.stage.value if event.stage else 'deploy'}: " \
                       f"{event.message}"
        elif event.kind == "result" and event.result is not None:
            result = event.result
            line = f"{head} {result.state.value}" + ("" if result.ok else f" ({result.message})")
        if line is not None:
            print(line, file=self.out, flush=True)


def summary_table(history: History, *, sandbox: str | None = None) -> str:
    rows = [r for r in history.status() if sandbox is None or r["sandbox"] == sandbox]
    if not rows:
        return "no sandboxes"
    header = ("SANDBOX", "SERVICE", "NODE", "BRANCH", "COMMIT", "PORT", "SYNC", "HEALTH",
              "REASON")
    table = [header]
    for row in rows:
        if row["service"] == "":
            continue
        table.append((
            row["sandbox"], row["service"], row["node"] or "-", row["branch"] or "-",
            (row["applied_commit"] or "-")[:7], str(row["port"] or "-"), row["sync"],
            row["health"], row["reason"],
        ))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in table]
    gateways = [r for r in rows if r["service"] == "gateway" and r["url"]]
    lines += [f"{g['sandbox']}: point the app at {g['url']}" for g in gateways]
    lines += [f"{r['sandbox']}: left as it runs, not authorised: {r['message']}"
              for r in rows if r["service"] == "" and r["reason"] == "Unauthorised"]
    return "\n".join(lines)


def _apply(args: argparse.Namespace, *, mode: str, restarts: frozenset[tuple[str, str | None]]
           = frozenset(), resets: frozenset[tuple[str, str]] = frozenset()
           ) -> tuple[int, PassResult]:
    history = History(history_path(args))
    try:
        prepared = prepare(state_dir(args), report=_say, restarts=restarts, resets=resets,
                           history=history)
    except BaseException:
        history.close()
        raise
    try:
        if mode == "restart":
            sandbox, service = next(iter(restarts))
            restart_targets(prepared, sandbox, service)
        for sandbox, entry in resets:
            reset_targets(prepared, sandbox, entry)
        return apply_prepared(args, prepared, history, mode=mode)
    finally:
        history.close()
        prepared.close()


def apply_prepared(args: argparse.Namespace, prepared: Prepared, history: History, *,
                   mode: str) -> tuple[int, PassResult]:
    """Show the plan, apply it and say how it went: (exit status, the pass)."""
    _say(prepared.plan.render())
    result = run(prepared, history=history, mode=mode, allow_prune=args.allow_prune,
                 report=_say, progress=Progress(), lease_wait=args.lease_wait)
    if result.refused:
        raise SdpError(result.refused)
    print(summary_table(history))
    if result.converged:
        print("converged")
        return 0, result
    final = result.final  # a second round, when removals freed ports others waited for
    if final.refused:
        print(f"not converged: {final.refused}")
    failed = [c for c in final.plan.changes if not final.outcome.ok(c)]
    for change in failed:
        why = final.outcome.results.get(change.step_id)
        message = why.message if why else final.outcome.errors.get(change.step_id, "")
        print(f"not converged: {change.resource} on {change.node}: {message}")
    for problem in final.plan.problems:
        print(f"not converged: {problem}")
    return 2, result


def cmd_once(args: argparse.Namespace) -> int:
    return _apply(args, mode="once")[0]


def cmd_restart(args: argparse.Namespace) -> int:
    return _apply(args, mode="restart", restarts=frozenset({(args.sandbox, args.service)}))[0]


def cmd_reset(args: argparse.Namespace) -> int:
    return _apply(args, mode="reset", resets=frozenset({(args.sandbox, args.entry)}))[0]


def cmd_status(args: argparse.Namespace) -> int:
    """The status the last passes recorded, from the history: no node is contacted."""
    path = history_path(args)
    if not path.exists():
        raise SdpError(f"no history at {path}: run 'sdp-reconcile --once' (or give --history)")
    history = History(path)
    try:
        rows = history.status()
        if args.sandbox:
            rows = [r for r in rows if r["sandbox"] == args.sandbox]
            if not rows:
                raise SdpError(f"no status recorded for sandbox {args.sandbox!r}")
        for row in rows:
            if row["service"] == "":
                line = f"{row['sandbox']}: {row['sync']} {row['health']} ({row['reason']})"
                if row["message"]:
                    line += f": {row['message']}"
                print(line)
        print(summary_table(history, sandbox=args.sandbox))
        last = history.query("SELECT * FROM passes ORDER BY id DESC LIMIT 1")
        if last:
            print(f"last pass: {last[0]['started_at']} by {last[0]['runner']} "
                  f"({last[0]['mode']}): {last[0]['status']} {last[0]['summary']}".rstrip())
        return 0 if all(r["sync"] == Sync.IN_SYNC for r in rows) else 2
    finally:
        history.close()


def cmd_logs(args: argparse.Namespace) -> int:
    """A sandbox service's container log, through the agent that runs it, printed without the
    terminal control sequences branch code may have written."""
    from sdp_reconciler.cli.terminal import printable
    from sdp_reconciler.observe.agents import pinned_client
    from sdp_reconciler.state.hostconfig import require_host_config
    from sdp_reconciler.state.loading import load_state

    host = require_host_config()
    state = load_state(state_dir(args), host=host.rules())
    name = state.nodes.model.names.container(args.sandbox, args.service)
    for node in state.nodes.model.nodes:
        with pinned_client(host, node.name) as client:
            try:
                running = {c.name for c in client.observe().containers}
            except SdpError as e:
                _say(f"node {node.name}: {e}")
                continue
            if name not in running:
                continue
            for _stamp, line in client.container_logs(name, tail=args.tail,
                                                       follow=args.follow):
                print(printable(line), flush=True)
            return 0
    raise SdpError(f"no node runs {name} (sandbox {args.sandbox!r}, service {args.service!r})")
