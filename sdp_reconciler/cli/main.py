"""``sdp-reconcile``: the command line of the reconciler.

Parses arguments, calls one command and turns ``SdpError`` into a message on stderr and exit
status 1 (no traceback). The commands themselves live in their own modules; this file only
wires them to argparse. Exit statuses: 0 success / nothing to do, 1 error, 2 changes pending
(``plan``) or not converged (``--once``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from msgspec import Struct

from sdp_reconciler.errors import SdpError
from sdp_reconciler.redaction import RedactingWriter

DEFAULT_STATE = "state"
Handler = Callable[[argparse.Namespace], int]


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state or os.environ.get("SDP_STATE") or DEFAULT_STATE)


def cmd_validate(args: argparse.Namespace) -> int:
    from sdp_reconciler.state.hostconfig import host_rules
    from sdp_reconciler.state.loading import load_state
    from sdp_reconciler.state.summary import summarize

    state = load_state(_state_dir(args), host=host_rules())
    print(f"valid: {summarize(state)}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from sdp_reconciler.state import schemas

    directory = Path(args.out)
    if args.check:
        stale = schemas.stale(directory)
        if stale:
            raise SdpError(
                f"schemas out of date in {directory}/: {', '.join(stale)}; "
                "run 'sdp-reconcile schemas' and commit the result"
            )
        print(f"schemas in {directory}/ are up to date")
        return 0
    written = schemas.write(directory)
    print(f"wrote {', '.join(written)}" if written else f"schemas in {directory}/ are up to date")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from sdp_reconciler.cli.watch import WatchOptions, main_loop
    from sdp_reconciler.paths import history_path, state_dir

    options = WatchOptions(
        state_dir=state_dir(args), history_path=history_path(args), interval=args.interval,
        listen=None if args.listen == "off" else args.listen, remote=args.remote,
        branch=args.branch, allow_prune=args.allow_prune,
    )
    return main_loop(options)


def cmd_serve(args: argparse.Namespace) -> int:
    from sdp_reconciler.web.server import cmd_serve as serve

    return serve(args)


def _add_state(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Sub-command options default to SUPPRESS so they never overwrite the same option given
    # before the command name (argparse would reset it to None).
    parser.add_argument(
        "--state", metavar="DIR", default=None if top else argparse.SUPPRESS,
        help=f"state directory (default: $SDP_STATE or ./{DEFAULT_STATE})",
    )


class LazyHandler(Struct, frozen=True):
    """A handler imported only when its command runs: --help and validate stay quick."""

    module: str
    name: str

    def load(self) -> Handler:
        handler: Handler = getattr(importlib.import_module(f"sdp_reconciler.{self.module}"),
                                   self.name)
        return handler

    def __call__(self, args: argparse.Namespace) -> int:
        return self.load()(args)


def _lazy(module: str, name: str) -> Handler:
    return LazyHandler(module, name)


@contextmanager
def _long_lived() -> Iterator[None]:
    """Start-up: what is made inside lives as long as the process (modules, classes, the
    parser), so the cyclic collector neither runs while it is made nor scans it afterwards
    (``gc.freeze``). Without this a no-op ``once`` spent a quarter of its CPU time in
    collections that found next to nothing (issue 15)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def commands_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *, help: str,
    description: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, description=description)
    _add_state(parser)
    return parser


def _add_history(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    parser.add_argument(
        "--history", metavar="FILE|URL", default=None if top else argparse.SUPPRESS,
        help="the history: a SQLite file (or sqlite:///PATH), or postgresql://USER@HOST:PORT/DB "
        "shared by reconcilers and pages on several hosts, its password in $PGPASSWORD (or "
        "?password_env=NAME / ?password_file=PATH), never here (default: $SDP_HISTORY, which "
        "may hold a whole URL, or ./.sdp/history.sqlite)",
    )


def _add_lease_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease-wait", type=float, metavar="SECONDS", default=None,
        help="how long to wait for another reconciler's lease on the INFRA node (default: the "
        "lease time limit plus 10 s); 0 fails at once",
    )


def _add_apply_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    parser.add_argument(
        "--allow-prune", action="store_true", default=False if top else argparse.SUPPRESS,
        help="apply even when the pass would remove more than half of what SDP runs",
    )
    parser.add_argument(
        "--lease-wait", type=float, metavar="SECONDS", default=None if top else argparse.SUPPRESS,
        help="how long to wait for another reconciler's lease on a node (default: the lease "
        "time limit, $SDP_LEASE_SECONDS or 90, plus 10 s); 0 fails at once",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdp-reconcile",
        description=(
            "Converge SDP sandboxes to the state directory: validate it, show the plan, "
            "apply it once (CI) or keep watching it."
        ),
        epilog="Run 'sdp-reconcile COMMAND --help' for a command's options. "
        "Documentation: README.md and docs/.",
    )
    commands_ = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.add_argument("--once", action="store_true",
                        help="converge once and exit; same as the 'once' command")
    _add_state(parser, top=True)
    _add_history(parser, top=True)
    _add_apply_options(parser, top=True)

    validate = commands_.add_parser(
        "validate", help="check the whole state directory; list every problem",
        description="Load the whole state directory and report every problem as "
        "file:line:col: message. Exit 0 when valid, 1 otherwise. Contacts no node.",
    )
    _add_state(validate)
    validate.set_defaults(handler=cmd_validate)

    schemas = commands_.add_parser(
        "schemas", help="write the JSON Schemas of the state files",
        description="Generate the JSON Schemas of nodes.yaml, sandbox, template, environment "
        "and ports files from the models.",
    )
    schemas.add_argument("--out", default="schemas", metavar="DIR",
                         help="output directory (default: schemas)")
    schemas.add_argument("--check", action="store_true",
                         help="fail when the files in DIR differ from the generated ones")
    schemas.set_defaults(handler=cmd_schemas)

    plan = commands_parser(commands_, "plan", help="show what a reconcile would change",
                           description="Observe the nodes and print the changes a reconcile "
                           "would make, with the reason for each, like 'terraform plan'. "
                           "Changes nothing. Exit 0: nothing to do; 2: changes pending; "
                           "1: error or problems in the state.")
    _add_history(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=_lazy("cli.commands", "cmd_plan"))

    once = commands_parser(commands_, "once", help="converge once and exit (what CI runs)",
                           description="Converge the nodes to the state once. Exit 0 only "
                           "when everything converged, 2 when something did not, 1 on error. "
                           "Same as 'sdp-reconcile --once'.")
    _add_history(once)
    _add_apply_options(once)
    once.set_defaults(handler=_lazy("cli.commands", "cmd_once"))

    restart = commands_parser(commands_, "restart", help="recreate a sandbox's containers",
                              description="Recreate the running containers of SANDBOX (or "
                              "only SERVICE) with the same spec, recorded like any deploy.")
    restart.add_argument("sandbox", metavar="SANDBOX")
    restart.add_argument("service", metavar="SERVICE", nargs="?",
                         help="a service name, or 'gateway'")
    _add_history(restart)
    _add_apply_options(restart)
    restart.set_defaults(handler=_lazy("cli.commands", "cmd_restart"))

    reset = commands_parser(
        commands_, "reset", help="re-clone a sandbox's database from its source",
        description="Replace the PostgreSQL database of data entry ENTRY of SANDBOX with a "
        "fresh copy of the entry's source (from:), in a pass recorded like any deploy. The "
        "copy is made beside the old one and swapped in: the sandbox is without a database "
        "for milliseconds; open sessions on the old one are ended. The role and its password "
        "stay. Exit codes as for --once.")
    reset.add_argument("sandbox", metavar="SANDBOX")
    reset.add_argument("entry", metavar="ENTRY", help="a postgresql entry of the sandbox's "
                       "data: (e.g. db)")
    _add_history(reset)
    _add_apply_options(reset)
    reset.set_defaults(handler=_lazy("cli.commands", "cmd_reset"))

    serve = commands_parser(commands_, "serve", help="serve the status page only",
                            description="Serve the read-only status page over the history "
                            "file, without reconciling: sandboxes, live progress and logs, "
                            "history, audit, templates, environments and nodes. Viewers sign "
                            "in with their Bitbucket account, checked through the gateway "
                            "agent, so the agent tokens' variables must be set here too.")
    _add_history(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", default=argparse.SUPPRESS,
                       help="address to listen on (default: $SDP_LISTEN or 127.0.0.1:3452)")
    serve.set_defaults(handler=cmd_serve)

    watch = commands_parser(
        commands_, "watch", help="reconcile on every state change and on an interval",
        description="Reconcile whenever a file under the state directory changes and every "
        "--interval seconds (branch heads, drift), and serve the status page. With --remote, "
        "the state directory is SDP's checkout of that repository, fast-forwarded before "
        "each pass. An invalid state applies nothing: the error shows on the page and the "
        "last valid state keeps being converged. The listener also takes Bitbucket push "
        "webhooks (POST /hooks/bitbucket, signed with $SDP_WEBHOOK_SECRET or reconciler.yaml "
        "webhooks.secret): a push starts a pass at once, scoped to the sandboxes that track "
        "the pushed branch (docs/operations.md, 'Push webhooks').",
    )
    _add_history(watch)
    _add_apply_options(watch)
    watch.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                       help="seconds between passes without a state change (default 60)")
    watch.add_argument("--listen", default="127.0.0.1:3452", metavar="HOST:PORT",
                       help="where the status page and POST /hooks/bitbucket listen (default "
                       "127.0.0.1:3452; "
                       "'off' for none)")
    watch.add_argument("--remote", metavar="URL",
                       help="state repository to follow (http(s); credentials from "
                       "SDP_GIT_USERNAME/SDP_GIT_PASSWORD)")
    watch.add_argument("--branch", default="main", help="branch of --remote (default main)")
    watch.set_defaults(handler=cmd_watch)
    status = commands_parser(commands_, "status", help="show the status the last passes "
                             "recorded", description="Print each sandbox's sync and health, "
                             "its services (branch, commit, port) and the last pass, from the "
                             "history. Contacts no node. Exit 0 when all are InSync, else 2.")
    _add_history(status)
    status.add_argument("sandbox", metavar="SANDBOX", nargs="?", help="only this sandbox")
    status.set_defaults(handler=_lazy("cli.commands", "cmd_status"))

    logs = commands_parser(commands_, "logs", help="print a sandbox service's container log",
                           description="Print the log of SERVICE's container in SANDBOX (or "
                           "'gateway'), through the agent that runs it.")
    logs.add_argument("sandbox", metavar="SANDBOX")
    logs.add_argument("service", metavar="SERVICE", help="a service name, or 'gateway'")
    logs.add_argument("--tail", type=int, default=100, help="lines to start with (100)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(handler=_lazy("cli.commands", "cmd_logs"))
    _add_editing_commands(commands_)
    _add_authorize(commands_)
    return parser


def _add_authorize(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    authorize = commands_parser(
        commands, "authorize", help="check who may change what in a range of state commits",
        description="Judge every commit of BASE..HEAD against state/access.yaml: each change "
        "needs a permission of its author's roles (and a valid SSH signature when access.yaml "
        "requires one). Exit 0 when every change is allowed, 1 with one line per refused "
        "change. HEAD alone checks from the root commit. See docs/access.md.",
    )
    authorize.add_argument("range", metavar="BASE..HEAD")
    authorize.add_argument("--json", action="store_true", help="print the decision as JSON")
    authorize.set_defaults(handler=_lazy("access.command", "cmd_authorize"))


def _add_editing_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    new = commands_parser(commands, "new", help="write a new sandbox file from a template",
                          description="Write sandboxes/SANDBOX.yaml starting from TEMPLATE, "
                          "with the services given by --branch on branches. Review, commit "
                          "and push it; nothing is deployed by this command.")
    new.add_argument("sandbox", metavar="SANDBOX")
    new.add_argument("--from", dest="template", required=True, metavar="TEMPLATE")
    new.add_argument("--branch", action="append", default=[], metavar="SERVICE=BRANCH",
                     help="deploy SERVICE from BRANCH in the sandbox (repeatable)")
    new.add_argument("--gateway-branch", metavar="BRANCH",
                     help="the gateway's branch (default: the template's)")
    new.set_defaults(handler=_lazy("cli.editing", "cmd_new"))

    clone = commands_parser(commands, "clone", help="copy a sandbox under a new name",
                            description="Write sandboxes/DEST.yaml as a copy of SOURCE (same "
                            "branches, environment, routes; comments kept), without its "
                            "ports: the copy gets new ones.")
    clone.add_argument("source", metavar="SOURCE")
    clone.add_argument("destination", metavar="DEST")
    clone.set_defaults(handler=_lazy("cli.editing", "cmd_clone"))

    route = commands_parser(commands, "route", help="route a sandbox service to a branch, "
                            "OCP or a URL", description="Set SERVICE of SANDBOX to one of: a "
                            "branch deployed in the sandbox, the OCP value, or a URL.")
    route.add_argument("sandbox", metavar="SANDBOX")
    route.add_argument("service", metavar="SERVICE")
    to = route.add_mutually_exclusive_group(required=True)
    to.add_argument("--branch", metavar="BRANCH", help="deploy this branch in the sandbox")
    to.add_argument("--ocp", action="store_true", help="route to OCP")
    to.add_argument("--target", metavar="URL", help="route to this http(s) URL")
    route.set_defaults(handler=_lazy("cli.editing", "cmd_route"))

    snap = commands_parser(
        commands, "snapshot", help="capture a sandbox as a template pinning its running "
        "commits (and, with --data, its database)", description="Write templates/NAME.yaml "
        "pinning the commits SANDBOX runs now (from the history), its routes and data "
        "entries, and environments/NAME.yaml copying its environment; recreate it later with "
        "'sdp-reconcile new X --from NAME'. With --data ENTRY, also copy the sandbox's "
        "PostgreSQL database of that entry, as it is now, into a new source on its INFRA node "
        "(named NAME, or --as SOURCE), through the node's lease like a pass, recorded in the "
        "history and the audit as 'capture source'; the template's ENTRY then clones from it "
        "(from: SOURCE, node: its INFRA node). The sandbox's own sessions on its database are "
        "ended for the copy (its services reconnect); a foreign session stops it after the "
        "node's busy_timeout_seconds, named. A SOURCE the node already offers, or an existing "
        "database of that name, is refused; so is a database that is not ready: nothing is "
        "captured or written then. Drop a captured source with 'sdp-reconcile drop-source "
        "SOURCE' (docs/infra.md).")
    snap.add_argument("sandbox", metavar="SANDBOX")
    snap.add_argument("name", metavar="NAME", help="the template (and default source) name")
    snap.add_argument("--data", metavar="ENTRY", help="a postgresql entry of the sandbox's "
                      "data: (e.g. db) whose database becomes a new source")
    snap.add_argument("--as", dest="source", metavar="SOURCE", help="the new source's name "
                      "(default: NAME); letters, digits and single '-' or '_'")
    _add_history(snap)
    _add_lease_wait(snap)
    snap.set_defaults(handler=_lazy("cli.editing", "cmd_snapshot"))

    drain = commands_parser(
        commands, "drain", help="move everything a MICRO node runs to other nodes, without "
        "dropping a request", description="Mark MICRO node NODE 'drained: true' in nodes.yaml "
        "(comments kept; commit and push it afterwards so every reconciler agrees) and run one "
        "pass that moves each of its sandboxes' services to another node serving the "
        "repository, chosen by free capacity: the new container starts there beside the old "
        "one and is health-gated, the gateway's route moves to it, and only then does the old "
        "one drain and go. A failed deploy leaves the old one serving (the next pass tries "
        "again once something changes). Nothing changes (nodes.yaml put back, nothing "
        "applied) and the error says why when NODE is unknown, not a MICRO node or "
        "unreachable, or when a service of it has nowhere to go: pinned there (node:), no "
        "other node serving its repository with room (capacity), or its sandbox held back by "
        "a problem. A drained node gets nothing new; '--undo' takes the mark off (nothing "
        "moves back on its own). Exit 0 when the node is empty and everything converged, 2 "
        "when something did not, 1 on an error. docs/operations.md, 'Several MICRO nodes'.")
    drain.add_argument("node", metavar="NODE", help="a MICRO node's name in nodes.yaml")
    how = drain.add_mutually_exclusive_group()
    how.add_argument("--dry-run", action="store_true",
                     help="show the moves the drain would make; write and change nothing")
    how.add_argument("--undo", action="store_true",
                     help="take the drain mark off NODE (writes nodes.yaml; applies nothing)")
    _add_history(drain)
    _add_apply_options(drain)
    drain.set_defaults(handler=_lazy("cli.drain", "cmd_drain"))

    history = commands.add_parser(
        "history", help="manage the history store (move it from SQLite to PostgreSQL)",
        description="Commands on the history store itself.")
    history_commands = history.add_subparsers(dest="history_command", metavar="COMMAND",
                                              required=True)
    migrate = history_commands.add_parser(
        "migrate", help="copy a history into another store, idempotently",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Copy every row (deployments, events, audit trail, status, sessions, "
        "meta) of one history into another, with their ids, e.g. a host's SQLite file into the "
        "PostgreSQL database that reconcilers and pages on several hosts share. Running it "
        "again copies only rows the source gained since, never one twice. The target must be "
        "empty or filled from this same source.",
        epilog="example:\n"
        "  PGPASSWORD=... sdp-reconcile history migrate \\\n"
        "      --from sqlite:///srv/sdp/.sdp/history.sqlite \\\n"
        "      --to postgresql://sdp@db.internal:5432/sdp_history\n\n"
        "Stop the reconcilers writing to --from first (or run it again after stopping them),\n"
        "then point every host at the target (--history or SDP_HISTORY). Passwords come from\n"
        "$PGPASSWORD, ?password_env=NAME or ?password_file=PATH: never on the command line.\n"
        "See docs/operations.md.")
    migrate.add_argument("--from", dest="source", required=True, metavar="URL",
                         help="the history to copy: sqlite:///PATH (or a path), or "
                         "postgresql://USER@HOST:PORT/DB")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL",
                         help="the store to fill (its schema is created or migrated first)")
    migrate.set_defaults(handler=_lazy("cli.historycmd", "cmd_migrate"))
    drop = commands_parser(
        commands, "drop-source", help="drop a source 'snapshot --data' captured",
        description="Drop the template database of SOURCE, a source SDP captured with "
        "'snapshot --data', through its INFRA node's lease, recorded in the history and the "
        "audit as 'drop source'. Refused for a source of node.yaml (the administrator's: SDP "
        "never drops a database it did not make) and while a sandbox of the state still "
        "clones from it (from: SOURCE). Sandboxes already cloned from it keep their copies.")
    drop.add_argument("source", metavar="SOURCE")
    drop.add_argument("--node", metavar="NODE", help="the INFRA node (needed only when two "
                      "list the source)")
    _add_history(drop)
    _add_lease_wait(drop)
    drop.set_defaults(handler=_lazy("cli.editing", "cmd_drop_source"))


def main(argv: Sequence[str] | None = None) -> int:
    with _long_lived():
        parser = build_parser()
        args = parser.parse_args(argv)
        handler: Handler | None = getattr(args, "handler", None)
        if args.once and handler is None:
            from sdp_reconciler.cli.commands import cmd_once

            handler = cmd_once
        if isinstance(handler, LazyHandler):
            handler = handler.load()
    if handler is None:
        parser.print_help(sys.stderr)
        return 1
    # Everything this process prints passes the redaction of every secret it resolved.
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingWriter(stdout), RedactingWriter(stderr)
    try:
        return handler(args)
    except SdpError as e:
        print(f"error: {e}" if "\n" not in str(e) else str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = stdout, stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
