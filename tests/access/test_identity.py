"""Identity and the trust start as pure decision tables: (access.yaml, author email, what the
signature proves) → the problem, or None. No git and no ssh-keygen here: the signature facts
are written out (the real ones are in test_signatures.py)."""

from __future__ import annotations

import base64

import pytest

from sdp_reconciler.access.identity import (
    SignatureFacts,
    SignatureStatus,
    identify,
    trust_start_problem,
)
from sdp_reconciler.access.model import AccessFile

OPS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDD2U5awODOABWWkJqv7hc6PGDaj2DjhJXn9JFyTztWT"
RINA_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII/GvKwQ8JmxSe1cNfJYeXZXeFAAyS9DWP5YmXmZOKWQ"


def blob(key: str) -> bytes:
    return base64.b64decode(key.split()[1])


def access(*, signed: bool) -> AccessFile:
    return AccessFile.model_validate({
        "users": {
            "ops": {"email": "ops@company.invalid", "roles": ["ADMIN"], "signing_key": OPS_KEY},
            "rina": {"email": "rina@company.invalid", "roles": ["QA"], "signing_key": RINA_KEY},
            "vic": {"email": "vic@company.invalid", "roles": ["VIEWER"]},
        },
        "require_signed_commits": signed,
    })


VALID_OPS = SignatureFacts(SignatureStatus.VALID, key=blob(OPS_KEY))
VALID_RINA = SignatureFacts(SignatureStatus.VALID, key=blob(RINA_KEY))
UNSIGNED = SignatureFacts(SignatureStatus.UNSIGNED)
BROKEN = SignatureFacts(SignatureStatus.INVALID, detail="incorrect signature")
RULE = "the commit that introduces access.yaml must be authored by a user it names as ADMIN"

TRUST_START = [
    ("the ADMIN it names", False, "ops@company.invalid", None, None),
    ("the ADMIN, email in another case", False, "OPS@company.invalid", None, None),
    ("a QA it names", False, "rina@company.invalid", None, f"{RULE}; rina is QA"),
    ("someone it does not name", False, "eve@company.invalid", None,
     f"{RULE}; no user in it has this email"),
    ("the ADMIN, signed by the ADMIN", True, "ops@company.invalid", VALID_OPS, None),
    ("the ADMIN, unsigned", True, "ops@company.invalid", UNSIGNED,
     f"{RULE} and signed with that ADMIN's key: the commit is not signed, and access.yaml "
     "requires signed commits"),
    ("the ADMIN's email, rina's signature", True, "ops@company.invalid", VALID_RINA,
     f"{RULE} and signed with that ADMIN's key: it is signed with rina's key, not with the "
     "key access.yaml lists for ops"),
    ("the ADMIN, a signature that does not verify", True, "ops@company.invalid", BROKEN,
     f"{RULE} and signed with that ADMIN's key: its SSH signature does not verify "
     "(incorrect signature)"),
]


@pytest.mark.parametrize("case", [c[0] for c in TRUST_START])
def test_trust_start(case: str) -> None:
    _, signed, email, signature, expected = next(c for c in TRUST_START if c[0] == case)
    assert trust_start_problem(access(signed=signed), email, signature) == expected


def test_an_invalid_introduced_file_never_starts_trust() -> None:
    problem = trust_start_problem(None, "ops@company.invalid", None)
    assert problem is not None and problem.startswith(RULE)


IDENTIFY = [
    ("unsigned rules, known email", False, "rina@company.invalid", None, "rina", None),
    ("unsigned rules, unknown email", False, "eve@company.invalid", None, None,
     "no user in access.yaml has this email"),
    ("signed rules, own key", True, "rina@company.invalid", VALID_RINA, "rina", None),
    ("signed rules, a GPG signature", True, "rina@company.invalid",
     SignatureFacts(SignatureStatus.NOT_SSH), "rina",
     "the commit's signature is not an SSH signature (access.yaml requires SSH-signed commits)"),
    ("signed rules, a user without a key", True, "vic@company.invalid", VALID_RINA, "vic",
     "access.yaml lists no signing_key for vic, and it requires signed commits"),
    ("signed rules, an unlisted key", True, "rina@company.invalid",
     SignatureFacts(SignatureStatus.VALID, key=b"\0\0\0\x0bssh-ed25519" + b"\1" * 36), "rina",
     "it is signed with a key access.yaml does not list, not with the key access.yaml lists "
     "for rina"),
]


@pytest.mark.parametrize("case", [c[0] for c in IDENTIFY])
def test_identify(case: str) -> None:
    _, signed, email, signature, user, problem = next(c for c in IDENTIFY if c[0] == case)
    identity = identify(access(signed=signed), email, signature)
    assert (identity.user, identity.problem) == (user, problem)
