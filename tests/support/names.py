"""This test run's resource names.

Container and network names are global to a Docker engine, so every installation a test run
starts (agents' ``node.yaml`` and the state's ``nodes.yaml``) uses this run's own
``resource_prefix``: a running demo, and a second test run, can share the engine.
"""

from __future__ import annotations

import secrets

from sdp_node.naming import ResourceNames

PREFIX = f"t{secrets.token_hex(3)}"
NAMES = ResourceNames(PREFIX)

__all__ = ["NAMES", "PREFIX"]
