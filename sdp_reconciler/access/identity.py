"""Who made a commit, as far as access.yaml can tell, and where trust starts. Pure.

Identity is the commit's **author email**, matched to a user of access.yaml (case-insensitive).
That is only as strong as the repository's branch permissions: anyone who can push can write
any author email. With ``require_signed_commits: true`` the commit must also carry an SSH
signature (git's format) that ``ssh-keygen -Y verify`` accepts, made by the very key
access.yaml lists for that user; ``signatures.py`` checks the signature and reports the signer's
key as ``SignatureFacts``, and the functions here only compare keys.

**Trust start** (``trust_start_problem``): access.yaml's rules bind from the commit after the one
that introduces it. That commit is judged by the file it introduces: its author must be a user
the file names as ADMIN, and when the file requires signed commits, signed with that ADMIN's
key. Otherwise the introduction is refused, and nothing is authorised until an ADMIN it names
commits it again (or it is removed).
"""

from __future__ import annotations

from enum import StrEnum

from msgspec import Struct

from sdp_reconciler.access.model import AccessFile, Role


class SignatureStatus(StrEnum):
    UNSIGNED = "unsigned"
    NOT_SSH = "not-ssh"
    VALID = "valid"
    INVALID = "invalid"


class SignatureFacts(Struct, frozen=True):
    """What a commit's signature proves, independent of any access.yaml."""

    status: SignatureStatus
    key: bytes | None = None
    """the signer's public key blob, when ``status`` is VALID"""
    detail: str = ""


class Identity(Struct, frozen=True):
    """A commit's author as access.yaml sees it."""

    email: str
    user: str | None
    roles: tuple[Role, ...]
    problem: str | None
    """why none of the commit's changes can be authorised (an unknown email, a bad signature)"""
    signature: str
    """how the signature was judged (JSON): 'not required', 'verified', 'other key' (valid, but
    not this user's key), 'unsigned', 'not-ssh', 'invalid', 'not checked' (untrusted rules)"""
    label: str | None = None
    """what a refusal line says in place of the roles (when no rules name any)"""

    @property
    def roles_text(self) -> str:
        if self.label is not None:
            return self.label
        return ", ".join(self.roles) if self.roles else "no user"


def identify(policy: AccessFile, email: str, signature: SignatureFacts | None) -> Identity:
    """Map a commit's author (and signature, when ``policy`` requires one) to a user.

    ``signature`` may be None only when the policy does not require signed commits."""
    user = policy.user_for_email(email)
    roles = tuple(policy.users[user].roles) if user is not None else ()
    if not policy.require_signed_commits:
        problem = None if user is not None else "no user in access.yaml has this email"
        return Identity(email, user, roles, problem, "not required")
    assert signature is not None
    if user is None:
        return Identity(email, None, (), "no user in access.yaml has this email",
                        str(signature.status))
    problem = signer_problem(policy, user, signature)
    judged = "verified" if problem is None else (
        "other key" if signature.status is SignatureStatus.VALID else str(signature.status))
    return Identity(email, user, roles, problem, judged)


def signer_problem(policy: AccessFile, user: str, signature: SignatureFacts) -> str | None:
    """Why ``signature`` is not a valid signature by ``user``'s key, or None."""
    expected = policy.users[user].key
    match signature.status:
        case SignatureStatus.UNSIGNED:
            return "the commit is not signed, and access.yaml requires signed commits"
        case SignatureStatus.NOT_SSH:
            return "the commit's signature is not an SSH signature (access.yaml requires " \
                "SSH-signed commits)"
        case SignatureStatus.INVALID:
            return f"its SSH signature does not verify ({signature.detail})"
        case SignatureStatus.VALID:
            if expected is None:
                return f"access.yaml lists no signing_key for {user}, and it requires signed " \
                    "commits"
            if signature.key == expected.blob:
                return None
            signer = next((name for name, other in policy.users.items()
                           if other.key is not None and other.key.blob == signature.key), None)
            whose = f"{signer}'s key" if signer is not None else "a key access.yaml does not list"
            return f"it is signed with {whose}, not with the key access.yaml lists for {user}"
    raise AssertionError(signature.status)  # pragma: no cover - StrEnum is exhaustive


def trust_start_problem(introduced: AccessFile | None, email: str,
                        signature: SignatureFacts | None) -> str | None:
    """Why the commit that introduces ``introduced`` does not start trust, or None.

    ``introduced`` is None when the file it introduces is not valid; ``signature`` may be None
    only when the file does not require signed commits."""
    rule = "the commit that introduces access.yaml must be authored by a user it names as ADMIN"
    if introduced is None:
        return f"{rule}, and the access.yaml it introduces is not valid (sdp-reconcile validate " \
            "says why)"
    user = introduced.user_for_email(email)
    if user is None:
        return f"{rule}; no user in it has this email"
    roles = introduced.users[user].roles
    if Role.ADMIN not in roles:
        return f"{rule}; {user} is {', '.join(roles)}"
    if introduced.require_signed_commits:
        assert signature is not None
        problem = signer_problem(introduced, user, signature)
        if problem is not None:
            return f"{rule} and signed with that ADMIN's key: {problem}"
    return None
