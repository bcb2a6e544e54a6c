"""Container specs: the public (secret-free) form, its keyed hash, and field-level differences.

The public spec is what the agent stores as a container's last applied spec and what the plan
compares to name the field that changed. Secret values appear in it only as HMAC digests under
the installation's spec-hash key, so they can be compared but not guessed. The spec hash is an
HMAC of the canonical JSON of the public spec under the same key: stable across runs and
clones (the key comes from ``nodes.yaml``'s reference), so a fresh CI clone computes the same
hash and recreates nothing. Pure functions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from sdp_node.protocol import Secret


def digest(key: bytes, value: str) -> str:
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:24]


def spec_hash(key: bytes, public: Mapping[str, Any]) -> str:
    canonical = json.dumps(public, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:32]


def public_spec(
    *,
    key: bytes,
    kind: str,
    repository: str,
    branch: str,
    commit: str,
    port: int,
    image: str,
    container_port: int,
    network: str | None,
    env: Mapping[str, str],
    secrets: Mapping[str, Secret],
    files: Mapping[str, Secret],
    cpu_millicores: int | None,
    memory_bytes: int | None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "repository": repository,
        "branch": branch,
        "commit": commit,
        "port": port,
        "image": image,
        "container_port": container_port,
        "network": network,
        "env": dict(sorted(env.items())),
        "secrets": {k: digest(key, v.reveal()) for k, v in sorted(secrets.items())},
        "files": {k: digest(key, v.reveal()) for k, v in sorted(files.items())},
        "cpu_millicores": cpu_millicores,
        "memory_bytes": memory_bytes,
    }


_SHORT = {"commit": 7}
_LABELS = {"cpu_millicores": "cpu", "memory_bytes": "memory"}


def _shown(field: str, value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str) and field in _SHORT:
        return value[: _SHORT[field]]
    if field == "cpu_millicores" and isinstance(value, int):
        return f"{value}m"
    if field == "memory_bytes" and isinstance(value, int):
        for unit, size in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
            if value % size == 0:
                return f"{value // size}{unit}"
        return f"{value}B"
    return str(value)


def differences(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """Human names of what changed, e.g. ``["env DB_HOST", "port 9001→9002"]``."""
    if before is None:
        return ["previous spec unknown"]
    changes: list[str] = []
    for field in sorted(set(before) | set(after)):
        old, new = before.get(field), after.get(field)
        if old == new:
            continue
        if isinstance(old, dict) or isinstance(new, dict):
            old_map, new_map = old or {}, new or {}
            label = {"env": "env", "secrets": "secret", "files": "file"}.get(field, field)
            for key in sorted(set(old_map) | set(new_map)):
                if old_map.get(key) != new_map.get(key):
                    verb = "" if key in old_map and key in new_map else (
                        " added" if key in new_map else " removed")
                    changes.append(f"{label} {key}{verb}")
        elif field in ("commit", "branch"):
            continue  # reported as "branch moved" / "branch changed" by the planner
        else:
            label = _LABELS.get(field, field)
            changes.append(f"{label} {_shown(field, old)}→{_shown(field, new)}")
    return changes
