"""``sdp-reconcile history migrate``: move a history from one store to another."""

from __future__ import annotations

import argparse
import os

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History
from sdp_reconciler.historycopy import migrate
from sdp_reconciler.historydb import parse_location


def cmd_migrate(args: argparse.Namespace) -> int:
    source_location = parse_location(args.source, os.environ, from_argv=True)
    if not source_location.exists():
        raise SdpError(f"--from {source_location}: no such history")
    target_location = parse_location(args.target, os.environ, from_argv=True)
    source = History(source_location)
    try:
        target = History(target_location)
        try:
            results = migrate(source, target)
        finally:
            target.close()
    finally:
        source.close()
    width = max(len(r.table) for r in results)
    for result in results:
        print(f"{result.table:<{width}}  {result.read:>8} read  {result.copied:>8} copied")
    total = sum(r.copied for r in results)
    print(f"copied {total} rows from {source_location} to {target_location}"
          + ("" if total else " (it already held every one)"))
    return 0
