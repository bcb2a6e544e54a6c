"""``sdp-node --config node.yaml``: run the agent.

Loads the node's configuration, reads its bearer token (from an environment variable or a
file, never from argv), heals any replacement an earlier run left half-done, puts its port
isolation rules back (they do not survive a reboot; the containers do), and serves the API
with uvicorn until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sdp_node.config import NodeConfig, load_config
from sdp_node.errors import NodeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdp-node",
        description="The SDP agent: serves the /v1 API that sdp-reconcile drives, and does the "
        "node's git, go build, docker and gateway work.",
        epilog="The bearer token is read from the environment variable or file that node.yaml "
        "names under 'token:'. Every setting: docs/node-yaml.md.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the node.yaml to use")
    parser.add_argument("--check", action="store_true",
                        help="only validate the node.yaml (every key: docs/node-yaml.md) and "
                        "say what it configures; the token is not read")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="override node.yaml's listen address")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser


def describe(config: NodeConfig) -> str:
    """One line per fact a reader checks after editing node.yaml."""
    lines = [f"node {config.name} ({config.type.value}) of installation {config.installation}, "
             f"resource prefix {config.resource_prefix}, listening on {config.listen}",
             f"workspace {config.workspace}"]
    lines += [f"repository {r.name} ({r.kind.value}): {r.url}, image {r.effective_image}"
              for r in config.repositories]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(Path(args.config))
        if args.check:
            print(describe(config))
            return 0
        if args.listen:
            config = config.model_copy(update={"listen": args.listen})
        token = config.token.read()
        import uvicorn

        from sdp_node.api import NodeApp

        node = NodeApp(config, token)
        if config.data is not None:
            config.data.secrets()  # fail at start, not at the first plan, when one is missing
        if node.converger is not None:
            for name in node.converger.recover_all():
                logging.getLogger("sdp_node").info(
                    "restored %s after an interrupted replacement", name)
            node.converger.restore_isolation()
    except NodeError as e:
        print(f"sdp-node: {e}", file=sys.stderr)
        return 1
    logging.getLogger("sdp_node").info(
        "node %s (%s) of installation %s listening on %s", config.name, config.type.value,
        config.installation, config.listen,
    )
    uvicorn.run(
        node.starlette(), host=config.listen_host, port=config.listen_port,
        log_level=args.log_level, access_log=False, timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
