"""``specs``: the public spec, its keyed hash, and the names of what changed.

The hash must be the same for the same spec and key in every process (a fresh CI clone
recreates nothing), differ with another key, and neither it, the public spec nor the
differences may reveal a secret value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from typing import Any

import pytest

from sdp_node.protocol import Secret
from sdp_reconciler.planner.specs import (
    SpecHasher,
    differences,
    digest,
    hashed_public_spec,
    public_spec,
    shared_parts,
    spec_hash,
)

KEY = b"specs-test-key"
SECRET_VALUE = "s3cr3t-Pa$$-canary"


def spec(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "key": KEY, "kind": "service", "repository": "account", "branch": "main",
        "commit": "a1b2c3d" + "0" * 33, "port": 9001, "image": "alpine:3.20",
        "container_port": 8080, "network": "sandbox-qa", "env": {"DB_HOST": "db-1"},
        "secrets": {"JWT_SECRET": Secret(SECRET_VALUE)}, "files": {},
        "cpu_millicores": None, "memory_bytes": None,
    }
    values.update(changes)
    return public_spec(**values)


BASE = spec()

DIFFERENCES: list[tuple[str, dict[str, Any] | None, dict[str, Any], list[str]]] = [
    ("previous spec unknown (agent lost it)", None, BASE, ["previous spec unknown"]),
    ("nothing", BASE, spec(), []),
    ("env added", BASE, spec(env={"DB_HOST": "db-1", "LOG": "debug"}), ["env LOG added"]),
    ("env removed", BASE, spec(env={}), ["env DB_HOST removed"]),
    ("env changed: named, value not shown", BASE, spec(env={"DB_HOST": "db-2"}),
     ["env DB_HOST"]),
    ("secret changed", BASE, spec(secrets={"JWT_SECRET": Secret("other")}),
     ["secret JWT_SECRET"]),
    ("secret added", BASE, spec(secrets={"JWT_SECRET": Secret(SECRET_VALUE),
                                         "API_KEY": Secret("k")}), ["secret API_KEY added"]),
    ("file changed", spec(files={"/etc/app.conf": Secret("a")}),
     spec(files={"/etc/app.conf": Secret("b")}), ["file /etc/app.conf"]),
    ("port", BASE, spec(port=9002), ["port 9001→9002"]),
    ("image", BASE, spec(image="alpine:3.21"), ["image alpine:3.20→alpine:3.21"]),
    ("limits", BASE, spec(cpu_millicores=500, memory_bytes=268435456),
     ["cpu none→500m", "memory none→256Mi"]),
    ("commit and branch are the planner's to word", BASE,
     spec(commit="e4f5a6b" + "0" * 33, branch="develop"), []),
    ("several fields, in name order", BASE,
     spec(port=9002, env={"DB_HOST": "db-1", "A": "1"}, container_port=80),
     ["container_port 8080→80", "env A added", "port 9001→9002"]),
    ("a field the old spec did not have (older agent)", {k: v for k, v in BASE.items()
                                                         if k != "memory_bytes"},
     spec(memory_bytes=1024), ["memory none→1Ki"]),
]


@pytest.mark.parametrize(("before", "after", "expected"), [c[1:] for c in DIFFERENCES],
                         ids=[c[0] for c in DIFFERENCES])
def test_differences(before: dict[str, Any] | None, after: dict[str, Any],
                     expected: list[str]) -> None:
    found = differences(before, after)
    assert found == expected
    assert SECRET_VALUE not in " ".join(found)
    assert "db-2" not in " ".join(found), "env values are not shown either"


def test_public_spec_holds_secret_digests_never_values() -> None:
    shown = json.dumps(BASE)
    assert SECRET_VALUE not in shown
    assert BASE["secrets"] == {"JWT_SECRET": digest(KEY, SECRET_VALUE)}
    assert BASE["secrets"]["JWT_SECRET"].startswith("hmac-sha256:")
    assert spec(key=b"another")["secrets"] != BASE["secrets"]


def test_spec_hash_is_stable_across_calls_and_key_order() -> None:
    reordered = dict(reversed(list(BASE.items())))
    assert spec_hash(KEY, BASE) == spec_hash(KEY, spec()) == spec_hash(KEY, reordered)
    assert spec_hash(KEY, spec(env={"B": "2", "A": "1"})) == \
        spec_hash(KEY, spec(env={"A": "1", "B": "2"}))


def test_spec_hash_changes_with_the_key_and_with_any_field() -> None:
    hashes = {
        spec_hash(KEY, BASE), spec_hash(b"another key", BASE),
        spec_hash(KEY, spec(port=9002)), spec_hash(KEY, spec(env={})),
        spec_hash(KEY, spec(secrets={"JWT_SECRET": Secret("other")})),
    }
    assert len(hashes) == 5


def test_spec_hash_is_the_same_in_another_process() -> None:
    """A fresh CI clone is another process, often with another PYTHONHASHSEED."""
    program = (
        "import json, sys\n"
        "from sdp_reconciler.planner.specs import spec_hash\n"
        "public = json.loads(sys.stdin.read())\n"
        "print(spec_hash(b'specs-test-key', public))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program], input=json.dumps(BASE), capture_output=True,
            text=True, check=True, env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("0", "12345")
    }
    assert outputs == {spec_hash(KEY, BASE)}


def test_spec_hash_does_not_reveal_the_secret() -> None:
    value = spec_hash(KEY, BASE)
    assert len(value) == 32 and SECRET_VALUE not in value
    # Without the key, hashing candidate values cannot confirm a guess.
    unkeyed = spec(key=b"")
    assert spec_hash(b"", unkeyed) != value


FAST_CASES: list[dict[str, Any]] = [
    {},
    {"network": None, "kind": "gateway", "port": 8080},
    {"cpu_millicores": 500, "memory_bytes": 268435456},
    {"env": {}, "secrets": {}, "files": {}},
    {"env": {"Z": "1", "A": 'quote " and \\ back', "PAYMENT_URL": "http://payment:8080"},
     "files": {"/etc/app.conf": Secret("x"), "/etc/a.conf": Secret("y")}},
    {"branch": "feature/é-ünïcode", "env": {"GREETING": "grüß dich ☃"},
     "repository": "acc\tount"},
]


@pytest.mark.parametrize("changes", FAST_CASES, ids=[str(i) for i in range(len(FAST_CASES))])
def test_the_planners_hashed_public_spec_is_public_spec_and_spec_hash(
        changes: dict[str, Any]) -> None:
    """The planner's fast path writes the canonical JSON itself: it must give the very spec,
    hash and failure key (the hash with port 0) that public_spec and spec_hash give."""
    values: dict[str, Any] = {
        "kind": "service", "repository": "account", "branch": "main",
        "commit": "a1b2c3d" + "0" * 33, "port": 9001, "image": "alpine:3.20",
        "container_port": 8080, "network": "sandbox-qa", "env": {"DB_HOST": "db-1"},
        "secrets": {"JWT_SECRET": Secret(SECRET_VALUE)}, "files": {},
        "cpu_millicores": None, "memory_bytes": None, **changes,
    }
    slow = public_spec(key=KEY, **values)
    parts = shared_parts(KEY, env=values.pop("env"), secrets=values.pop("secrets"),
                         files=values.pop("files"))
    hasher = SpecHasher(KEY)
    public, hashed, unported = hashed_public_spec(hasher=hasher, parts=parts, **values)
    assert list(public.items()) == list(slow.items())
    assert hashed == spec_hash(KEY, slow)
    assert hasher(unported) == spec_hash(KEY, {**slow, "port": 0})
    assert "specs-test-key" not in repr(hasher)


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 65, bytes(range(200))],
                         ids=["empty", "short", "one-block", "longer", "binary"])
def test_the_spec_hasher_is_hmac_sha256(key: bytes) -> None:
    hasher = SpecHasher(key)
    for message in (b"", b"{}", json.dumps(BASE, sort_keys=True).encode()):
        assert hasher(message) == hmac.new(key, message, hashlib.sha256).hexdigest()[:32]
