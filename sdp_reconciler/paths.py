"""Where the state directory and the history database are: the command line, else the
environment (``SDP_STATE``, ``SDP_HISTORY``), else the defaults.

Shared by the commands and the page (which must not import the commands: they import the
pass, which mutates nodes).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sdp_reconciler.historydb import Location, parse_location

DEFAULT_HISTORY = ".sdp/history.sqlite"


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state or os.environ.get("SDP_STATE") or "state")


def history_location(args: argparse.Namespace) -> Location:
    """``--history``, else ``$SDP_HISTORY``, else ``./.sdp/history.sqlite``: a SQLite file or a
    PostgreSQL URL (its password from the environment, never from argv: see ``historydb``)."""
    given = getattr(args, "history", None)
    if given:
        return parse_location(given, os.environ, from_argv=True)
    return parse_location(os.environ.get("SDP_HISTORY") or DEFAULT_HISTORY, os.environ)


history_path = history_location
"""The old name (callers that say "path" get a ``Location``, which has ``exists()``)."""
