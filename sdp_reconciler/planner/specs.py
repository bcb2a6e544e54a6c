"""Container specs: the public (secret-free) form, its keyed hash, and field-level differences.

The public spec is what the agent stores as a container's last applied spec and what the plan
compares to name the field that changed. Secret values appear in it only as HMAC digests under
the installation's spec-hash key, so they can be compared but not guessed. The spec hash is an
HMAC of the canonical JSON of the public spec under the same key: stable across runs and
clones (the key comes from ``nodes.yaml``'s reference), so a fresh CI clone computes the same
hash and recreates nothing. Pure functions.

The planner builds thousands of specs per pass that share most of their parts (one
environment, one sandbox's URL variables): ``SharedParts`` holds those parts digested and
encoded once, and ``spec_hashes`` assembles the canonical JSON from them, byte for byte what
``spec_hash`` would hash (tests/planning/test_specs.py compares the two).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from msgspec import Struct

from sdp_node.protocol import Secret


def digest(key: bytes, value: str) -> str:
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:24]


def spec_hash(key: bytes, public: Mapping[str, Any]) -> str:
    return _keyed(key, _canonical_json(public))


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _keyed(key: bytes, canonical: str) -> str:
    return _keyed_bytes(key, canonical.encode())


def _keyed_bytes(key: bytes, canonical: bytes) -> str:
    return hmac.digest(key, canonical, "sha256")[:16].hex()


_BLOCK = 64  # SHA-256's block size
_INNER_PAD = bytes(x ^ 0x36 for x in range(256))
_OUTER_PAD = bytes(x ^ 0x5C for x in range(256))


class SpecHasher:
    """``spec_hash`` of many canonical JSONs under one key: HMAC-SHA256 as RFC 2104 (and
    ``hmac``) computes it, with the key's two padded blocks hashed once instead of once per
    spec (about half the cost of a small message's HMAC). It never shows the key."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_INNER_PAD))
        self._outer = hashlib.sha256(block.translate(_OUTER_PAD))

    def __call__(self, canonical: bytes) -> str:
        inner = self._inner.copy()
        inner.update(canonical)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:16].hex()

    def __repr__(self) -> str:
        return "SpecHasher(***)"


def hide(key: bytes, secrets: Mapping[str, Secret],
         files: Mapping[str, Secret]) -> tuple[dict[str, str], dict[str, str]]:
    """The digests that stand for secret values and file contents in a public spec."""
    return ({k: digest(key, v.reveal()) for k, v in sorted(secrets.items())},
            {k: digest(key, v.reveal()) for k, v in sorted(files.items())})


class SharedParts(Struct, frozen=True):
    """The parts of a public spec that many containers share, made once: the sorted
    variables, the secrets' and files' digests, and each one's canonical JSON. The dicts are
    shared by every spec built from these parts; nothing may change them."""

    env: dict[str, str]
    secrets: dict[str, str]
    files: dict[str, str]
    env_json: bytes
    secrets_json: bytes
    files_json: bytes


def shared_parts(key: bytes, *, env: Mapping[str, str], secrets: Mapping[str, Secret],
                 files: Mapping[str, Secret],
                 hidden: tuple[dict[str, str], dict[str, str]] | None = None) -> SharedParts:
    """``hidden``: ``hide(key, secrets, files)`` when already known (one environment's
    digests serve every sandbox that uses it)."""
    secret_digests, file_digests = hidden if hidden is not None else hide(key, secrets, files)
    env_sorted = dict(sorted(env.items()))
    return SharedParts(
        env=env_sorted, secrets=secret_digests, files=file_digests,
        env_json=_canonical_json(env_sorted).encode(),
        secrets_json=_canonical_json(secret_digests).encode(),
        files_json=_canonical_json(file_digests).encode(),
    )


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
    parts: SharedParts | None = None,
) -> dict[str, Any]:
    """``parts``: ``shared_parts`` of the same ``env``, ``secrets`` and ``files``, made once
    for the containers that share them (the planner's per-pass cache); made here when None."""
    if parts is None:
        parts = shared_parts(key, env=env, secrets=secrets, files=files)
    return {
        "kind": kind,
        "repository": repository,
        "branch": branch,
        "commit": commit,
        "port": port,
        "image": image,
        "container_port": container_port,
        "network": network,
        "env": parts.env,
        "secrets": parts.secrets,
        "files": parts.files,
        "cpu_millicores": cpu_millicores,
        "memory_bytes": memory_bytes,
    }


def hashed_public_spec(
    *,
    hasher: SpecHasher,
    kind: str,
    repository: str,
    branch: str,
    commit: str,
    port: int,
    image: str,
    container_port: int,
    network: str | None,
    cpu_millicores: int | None,
    memory_bytes: int | None,
    parts: SharedParts,
) -> tuple[dict[str, Any], str, bytes]:
    """``public_spec`` of these values and ``parts``, with its ``spec_hash`` and the canonical
    JSON of the spec with port 0, whose hash (``hasher``) is the failure key (a switch changes
    the port, not what failed; hashed only when needed).

    The canonical JSON is written out here in ``json.dumps``'s sorted-key form from the
    pre-encoded parts rather than re-encoded per container (the planner's hot path);
    tests/planning/test_specs.py checks it against ``spec_hash`` of ``public_spec``."""
    public = {
        "kind": kind, "repository": repository, "branch": branch, "commit": commit,
        "port": port, "image": image, "container_port": container_port, "network": network,
        "env": parts.env, "secrets": parts.secrets, "files": parts.files,
        "cpu_millicores": cpu_millicores, "memory_bytes": memory_bytes,
    }  # public_spec's, key for key (the test compares them)
    text = encode_basestring_ascii
    head = _HEAD % (
        text(branch).encode(), text(commit).encode(), _number(container_port),
        _number(cpu_millicores), parts.env_json, parts.files_json, text(image).encode(),
        text(kind).encode(), _number(memory_bytes),
        b"null" if network is None else text(network).encode(),
    )
    tail = _TAIL % (text(repository).encode(), parts.secrets_json)
    return public, hasher(b"%s%d%s" % (head, port, tail)), head + b"0" + tail


# json.dumps(public, sort_keys=True, separators=(",", ":")), with the port left out
_HEAD = (b'{"branch":%s,"commit":%s,"container_port":%s,"cpu_millicores":%s,"env":%s,'
         b'"files":%s,"image":%s,"kind":%s,"memory_bytes":%s,"network":%s,"port":')
_TAIL = b',"repository":%s,"secrets":%s}'


def _number(value: int | None) -> bytes:
    return b"null" if value is None else b"%d" % value


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
