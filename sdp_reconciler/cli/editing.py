"""The CLI side of ``editing``: parse arguments, call the edit, say what was written."""

from __future__ import annotations

import argparse

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History
from sdp_reconciler.paths import history_path, state_dir
from sdp_reconciler.state import editing

NEXT = "review it, commit and push; the next reconcile applies it"


def cmd_new(args: argparse.Namespace) -> int:
    branches = {}
    for item in args.branch:
        service, sep, branch = item.partition("=")
        if not sep or not service or not branch:
            raise SdpError(f"--branch {item!r}: write SERVICE=BRANCH, e.g. account=feature/x")
        branches[service] = branch
    root = state_dir(args)
    schemas = editing.schemas_dir(root.resolve())
    had_schemas = editing.has_schemas(schemas)
    path = editing.new_sandbox(root, args.sandbox, template=args.template,
                               branches=branches, gateway_branch=args.gateway_branch)
    print(f"wrote {path}: {NEXT}")
    if not had_schemas and editing.has_schemas(schemas):
        print(f"wrote {schemas}/ too: the JSON Schemas its first line points at, for editors; "
              "commit them with it")
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
    if args.source is not None and args.data is None:
        raise SdpError("--as SOURCE names the source --data ENTRY captures: give --data too")
    history = History(history_path(args))
    try:
        if args.data is not None:
            return _snapshot_with_data(args, history)
        paths = editing.snapshot(state_dir(args), args.sandbox, args.name, history)
    finally:
        history.close()
    for path in paths:
        print(f"wrote {path}")
    print(f"recreate it with: sdp-reconcile new SANDBOX --from {args.name}; {NEXT}")
    return 0


def _snapshot_with_data(args: argparse.Namespace, history: History) -> int:
    """Plan the capture, write the template (checked), capture through the INFRA node's lease;
    a failed capture removes the files again, so nothing is left half-made."""
    from sdp_reconciler.apply.reconcile import prepare
    from sdp_reconciler.apply.sources import apply_change
    from sdp_reconciler.cli.commands import Progress, _say
    from sdp_reconciler.planner.captureplanning import plan_capture

    source = args.source or args.name
    prepared = prepare(state_dir(args), report=_say, history=history)
    try:
        if args.sandbox in prepared.held:
            raise SdpError(f"sandbox {args.sandbox!r} is held (a change to it is not "
                           "authorised, docs/access.md): nothing captured")
        change = plan_capture(data=prepared.data, world=prepared.world,
                              sandboxes=prepared.sandboxes, sandbox=args.sandbox,
                              entry=args.data, source=source)
        if isinstance(change, str):
            raise SdpError(f"{change}: nothing captured or written")
        paths = editing.snapshot(state_dir(args), args.sandbox, args.name, history,
                                 captured={args.data: (source, change.node)})
        _say(f"{change.action.symbol} {change.describe()}  {change.reason}")
        try:
            failure = apply_change(prepared, change, history=history, mode="snapshot",
                                   progress=Progress(), lease_wait=args.lease_wait)
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
        if failure is not None:
            for path in paths:
                path.unlink(missing_ok=True)
            raise SdpError(f"capturing {change.detail.captured_from} as source {source!r} "
                           f"on {change.node} failed: {failure}; nothing written")
    finally:
        prepared.close()
    for path in paths:
        print(f"wrote {path}")
    print(f"captured database {change.detail.captured_from} as source {source!r} on "
          f"{change.node} (entry {args.data} of the template clones from it)")
    print(f"recreate it with: sdp-reconcile new SANDBOX --from {args.name}; {NEXT}; drop the "
          f"source later with: sdp-reconcile drop-source {source}")
    return 0


def cmd_drop_source(args: argparse.Namespace) -> int:
    from sdp_reconciler.apply.reconcile import prepare
    from sdp_reconciler.apply.sources import apply_change
    from sdp_reconciler.cli.commands import Progress, _say
    from sdp_reconciler.planner.captureplanning import plan_drop_source

    history = History(history_path(args))
    try:
        prepared = prepare(state_dir(args), report=_say, history=history)
        try:
            change = plan_drop_source(world=prepared.world, sandboxes=prepared.sandboxes,
                                      source=args.source, node=args.node)
            if isinstance(change, str):
                raise SdpError(f"{change}: nothing dropped")
            _say(f"{change.action.symbol} {change.describe()}  {change.reason}")
            failure = apply_change(prepared, change, history=history, mode="drop-source",
                                   progress=Progress(), lease_wait=args.lease_wait)
        finally:
            prepared.close()
    finally:
        history.close()
    if failure is not None:
        raise SdpError(f"dropping source {args.source!r} on {change.node} failed: {failure}")
    print(f"dropped source {args.source!r} on {change.node}")
    return 0
