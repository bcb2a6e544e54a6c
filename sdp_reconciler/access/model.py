"""``state/access.yaml``: users, their roles, role overrides and whether commits must be signed.

Pure data (pydantic, frozen, unknown keys forbidden), like ``sdp_reconciler.state.models``. Field
rules live in the models (an unknown role or permission, a user without roles, a malformed
signing key); rules over the whole file live in ``access_problems`` (an email or a key used
twice, an ADMIN override, no ADMIN at all), each placed at the key or value it is about. The
loader reports both as ``file:line:col``. A signing key is never echoed in a message: someone
may have pasted a private key where the public one belongs.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from msgspec import Struct
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field

from sdp_reconciler.state.locations import Problem
from sdp_reconciler.state.models import SCHEMA_BASE, Frozen

if TYPE_CHECKING:  # only its type: sources.py also reads files, which this module never does
    from sdp_reconciler.state.sources import SourceDoc

ACCESS_FILE = "access.yaml"


class Role(StrEnum):
    """The seed's roles. Their permissions: ``permissions.DEFAULT_PERMISSIONS``."""

    ADMIN = "ADMIN"
    BACKEND = "BACKEND"
    QA = "QA"
    VIEWER = "VIEWER"


class Permission(StrEnum):
    """What a change to the state needs; ``changes.py`` maps each change to one of these."""

    DEPLOY = "deploy"
    DELETE_SANDBOX = "delete_sandbox"
    MANAGE_TEMPLATES = "manage_templates"
    MANAGE_ROUTES = "manage_routes"
    MANAGE_ENVIRONMENTS = "manage_environments"
    MANAGE_ACCESS = "manage_access"
    MANAGE_NODES = "manage_nodes"


def _choice(kind: str, vocabulary: type[StrEnum]) -> Any:
    names = ", ".join(vocabulary)

    def check(value: Any) -> Any:
        if isinstance(value, str) and value in vocabulary.__members__.values():
            return value
        raise ValueError(f"unknown {kind} {value!r}; {kind}s are {names}")

    return check


RoleName = Annotated[Role, BeforeValidator(_choice("role", Role))]
PermissionName = Annotated[Permission, BeforeValidator(_choice("permission", Permission))]

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _check_username(value: str) -> str:
    if not _USERNAME.fullmatch(value):
        raise ValueError(
            f"user {value!r} is not a Bitbucket username (letters, digits, '.', '_', '-', "
            "starting with a letter or digit)"
        )
    return value


def _check_email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or len(value) > 254:
        raise ValueError(f"{value!r} is not an email address like 'rina@company.invalid'")
    return value


def _check_roles(value: list[Role]) -> list[Role]:
    if not value:
        raise ValueError(
            "a user needs at least one role (VIEWER for someone who may change nothing); "
            "to take every right away, remove the user"
        )
    return value


# --- SSH public keys ------------------------------------------------------------------------------

KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
_NOT_SHOWN = "the value is not shown in case it is a private key"


class PublicKey(Struct, frozen=True):
    """An SSH public key: its type and its wire-format blob (what an SSHSIG carries)."""

    type: str
    blob: bytes

    @property
    def openssh(self) -> str:
        """``ssh-ed25519 AAAA...``: the line an allowed-signers file takes (no comment)."""
        return f"{self.type} {base64.b64encode(self.blob).decode()}"


def read_ssh_string(data: bytes, offset: int) -> tuple[bytes, int]:
    """An SSH wire-format string (uint32 length, bytes) at ``offset``; ValueError if cut."""
    if offset + 4 > len(data):
        raise ValueError("truncated")
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    end = offset + 4 + length
    if end > len(data):
        raise ValueError("truncated")
    return data[offset + 4:end], end


def parse_public_key(text: str) -> PublicKey:
    """``"ssh-ed25519 AAAA... comment"`` -> PublicKey; ValueError says what is wrong."""
    if "PRIVATE KEY" in text:
        raise ValueError(
            "this is a private key: give the public key (the one line of the .pub file) and "
            f"treat the private one as leaked; {_NOT_SHOWN}"
        )
    parts = text.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise ValueError(
            "expected an SSH public key line like 'ssh-ed25519 AAAA... comment' "
            f"(types: {', '.join(KEY_TYPES)}); {_NOT_SHOWN}"
        )
    key_type = parts[0]
    try:
        blob = base64.b64decode(parts[1], validate=True)
        inner, end = read_ssh_string(blob, 0)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"the key data after {key_type!r} is not valid base64 of an SSH key; copy the "
            f"whole line of the .pub file; {_NOT_SHOWN}"
        ) from None
    if inner.decode("latin-1") != key_type:
        raise ValueError(
            f"the key data does not encode a {key_type!r} key (it says "
            f"{'another type' if inner else 'nothing'}); copy the whole line of the .pub file"
        )
    if key_type == "ssh-ed25519" and len(blob) != end + 4 + 32:
        raise ValueError(
            "the ssh-ed25519 key data has the wrong length; copy the whole line of the .pub "
            "file"
        )
    return PublicKey(type=key_type, blob=blob)


_KEY_PATTERN = "^(" + "|".join(t.replace(".", "[.]") for t in KEY_TYPES) + \
    ") [A-Za-z0-9+/]+={0,2}( .*)?$"


def _check_key(value: str) -> str:
    parse_public_key(value)
    return value


Username = Annotated[str, AfterValidator(_check_username)]
Email = Annotated[str, AfterValidator(_check_email)]
SigningKey = Annotated[str, AfterValidator(_check_key)]


# --- the file -------------------------------------------------------------------------------------


class AccessUser(Frozen):
    """One person: the Bitbucket username is the key in ``users``."""

    email: Email = Field(description="the author email of this user's commits")
    roles: Annotated[list[RoleName], AfterValidator(_check_roles)] = Field(
        description="ADMIN, BACKEND, QA or VIEWER (at least one)",
        json_schema_extra={"minItems": 1},
    )
    signing_key: SigningKey | None = Field(
        default=None,
        description="the SSH public key this user signs commits with ('ssh-ed25519 AAAA...')",
        json_schema_extra={"pattern": _KEY_PATTERN},
    )

    @property
    def key(self) -> PublicKey | None:
        return parse_public_key(self.signing_key) if self.signing_key is not None else None


class AccessFile(Frozen):
    """``state/access.yaml``: who may change what in the state (optional)."""

    model_config = ConfigDict(
        json_schema_extra={"$id": f"{SCHEMA_BASE}/access.schema.json"}, title="SDP access"
    )
    users: dict[Username, AccessUser] = Field(
        description="Bitbucket username -> email, roles and signing key",
        json_schema_extra={"propertyNames": {"pattern": f"^{_USERNAME.pattern}$"}},
    )
    roles: dict[RoleName, list[PermissionName]] = Field(
        default_factory=dict,
        description="replace a role's permissions (BACKEND, QA, VIEWER; ADMIN always has all)",
        json_schema_extra={"propertyNames": {"enum": [r for r in Role if r is not Role.ADMIN]}},
    )
    require_signed_commits: bool = Field(
        default=False,
        description="every commit must be SSH-signed by the signing_key of its author's user",
    )

    def user_for_email(self, email: str) -> str | None:
        """The username whose email is ``email`` (case-insensitive), or None."""
        wanted = email.strip().lower()
        for name, user in self.users.items():
            if user.email.lower() == wanted:
                return name
        return None


def access_problems(model: AccessFile, source: SourceDoc) -> list[Problem]:
    """Whole-file rules of a schema-valid access.yaml, each at the key or value it is about."""
    return [*_admin_is_fixed(model, source), *_unique_emails(model, source),
            *_unique_keys(model, source), *_has_admin(model, source)]


def _admin_is_fixed(model: AccessFile, source: SourceDoc) -> Iterator[Problem]:
    if Role.ADMIN in model.roles:
        yield Problem(
            source.locate(("roles", "ADMIN"), key=True), "roles.ADMIN",
            "ADMIN's permissions cannot be changed: it always holds every permission, so "
            "access.yaml can always be repaired; override BACKEND, QA or VIEWER instead",
        )


def _unique_emails(model: AccessFile, source: SourceDoc) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for name, user in model.users.items():
        email = user.email.lower()
        if email in seen:
            yield Problem(
                source.locate(("users", name, "email")), f"users.{name}.email",
                f"email {user.email!r} is already used by user {seen[email]!r}: a commit's "
                "author is found by email, so each email belongs to one user",
            )
        seen.setdefault(email, name)


def _unique_keys(model: AccessFile, source: SourceDoc) -> Iterator[Problem]:
    seen: dict[bytes, str] = {}
    for name, user in model.users.items():
        key = user.key
        if key is None:
            continue
        if key.blob in seen:
            yield Problem(
                source.locate(("users", name, "signing_key")), f"users.{name}.signing_key",
                f"this signing key is already used by user {seen[key.blob]!r}: a signature "
                "must name one user",
            )
        seen.setdefault(key.blob, name)


def _has_admin(model: AccessFile, source: SourceDoc) -> Iterator[Problem]:
    if not any(Role.ADMIN in user.roles for user in model.users.values()):
        yield Problem(
            source.locate(("users",), key=True), "users",
            "no user is ADMIN: nobody could ever change access.yaml again (and the commit "
            "that introduces it must be an ADMIN's); give someone the ADMIN role",
        )
