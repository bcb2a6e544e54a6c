"""``sdp-reconcile``: the command line of the reconciler.

Parses arguments, calls one command and turns ``SdpError`` into a message on stderr and exit
status 1 (no traceback). The commands themselves live in their own modules; this file only
wires them to argparse. Exit statuses: 0 success / nothing to do, 1 error, 2 changes pending
(``plan``) or not converged (``--once``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sdp_reconciler.errors import SdpError

DEFAULT_STATE = "state"
Handler = Callable[[argparse.Namespace], int]


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state or os.environ.get("SDP_STATE") or DEFAULT_STATE)


def cmd_validate(args: argparse.Namespace) -> int:
    from sdp_reconciler.loading import load_state
    from sdp_reconciler.summary import summarize

    state = load_state(_state_dir(args))
    print(f"valid: {summarize(state)}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from sdp_reconciler import schemas

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


def _add_state(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state", metavar="DIR",
        help=f"state directory (default: $SDP_STATE or ./{DEFAULT_STATE})",
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check the whole state directory; list every problem",
        description="Load the whole state directory and report every problem as "
        "file:line:col: message. Exit 0 when valid, 1 otherwise. Contacts no node.",
    )
    _add_state(validate)
    validate.set_defaults(handler=cmd_validate)

    schemas = commands.add_parser(
        "schemas", help="write the JSON Schemas of the state files",
        description="Generate the JSON Schemas of nodes.yaml, sandbox, template, environment "
        "and ports files from the models.",
    )
    schemas.add_argument("--out", default="schemas", metavar="DIR",
                         help="output directory (default: schemas)")
    schemas.add_argument("--check", action="store_true",
                         help="fail when the files in DIR differ from the generated ones")
    schemas.set_defaults(handler=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 1
    try:
        return handler(args)
    except SdpError as e:
        print(f"error: {e}" if "\n" not in str(e) else str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
