"""``sdp-reconcile authorize [--state DIR] [--json] BASE..HEAD``: a CI check on a pull request.

Judges every commit of the range (the work tree is not looked at) and exits 0 when every change
is allowed, 1 with one refusal line per refused change on stdout (or the JSON document with
``--json``), and 1 with a message on stderr when the range cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sdp_reconciler.access.authorize import authorize_range, parse_range
from sdp_reconciler.access.render import decision_json, summary


def cmd_authorize(args: argparse.Namespace) -> int:
    state_dir = Path(getattr(args, "state", None) or os.environ.get("SDP_STATE") or "state")
    base, head = parse_range(args.range)
    decision = authorize_range(state_dir, base, head)
    if args.json:
        print(json.dumps(decision_json(decision), indent=2))
    else:
        for line in decision.refusals:
            print(line)
    print(summary(decision), file=sys.stderr)
    return 0 if decision.allowed else 1
