"""The CLI side of ``editing``: parse arguments, call the edit, say what was written."""

from __future__ import annotations

import argparse

from sdp_reconciler.cli.commands import history_path, state_dir
from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History
from sdp_reconciler.state import editing

NEXT = "review it, commit and push; the next reconcile applies it"


def cmd_new(args: argparse.Namespace) -> int:
    branches = {}
    for item in args.branch:
        service, sep, branch = item.partition("=")
        if not sep or not service or not branch:
            raise SdpError(f"--branch {item!r}: write SERVICE=BRANCH, e.g. account=feature/x")
        branches[service] = branch
    path = editing.new_sandbox(state_dir(args), args.sandbox, template=args.template,
                               branches=branches, gateway_branch=args.gateway_branch)
    print(f"wrote {path}: {NEXT}")
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    path = editing.clone_sandbox(state_dir(args), args.source, args.destination)
    print(f"wrote {path} (new ports will be allocated): {NEXT}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    path = editing.set_route(state_dir(args), args.sandbox, args.service, branch=args.branch,
                             ocp=args.ocp, target=args.target)
    print(f"wrote {path}: {NEXT}")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    if not history_path(args).exists():
        raise SdpError(f"no history at {history_path(args)}: a snapshot pins the commits a "
                       "reconcile recorded there (give --history)")
    history = History(history_path(args))
    try:
        paths = editing.snapshot(state_dir(args), args.sandbox, args.name, history)
    finally:
        history.close()
    for path in paths:
        print(f"wrote {path}")
    print(f"recreate it with: sdp-reconcile new SANDBOX --from {args.name}; {NEXT}")
    return 0
