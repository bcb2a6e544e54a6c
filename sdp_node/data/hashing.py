"""Password checks and the salted hashes servers store, so a plaintext never reaches a server.

The reconciler sends each sandbox user's password to the agent (``Secret``); the agent gives
PostgreSQL a SCRAM-SHA-256 verifier, Redis a SHA-256 hash (``ACL SETUSER ... #<hex>``) and
RabbitMQ a salted SHA-256 ``password_hash``. A server's statement log, ``MONITOR`` or
management log can then show a hash, never a password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from sdp_node.errors import BadRequest
from sdp_node.protocol import Secret

PASSWORD_MIN = 16
PASSWORD_MAX = 128
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
_PRINTABLE = re.compile(r"[!-~]+")


def check_password(password: Secret) -> str:
    """The revealed password, if it is 16-128 printable ASCII characters without spaces.

    ASCII keeps SCRAM simple and exact: PostgreSQL SASLprep-normalises non-ASCII passwords, and
    a verifier computed without the same normalisation would refuse the right password. The
    reconciler's generated passwords are URL-safe base64.
    """
    value = password.reveal()
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX or not _PRINTABLE.fullmatch(value):
        raise BadRequest(
            f"a data service password must be {PASSWORD_MIN}-{PASSWORD_MAX} printable ASCII "
            "characters without spaces (the reconciler generates them)"
        )
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_sha256(password: str, *, salt: bytes | None = None,
                 iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a password: ``SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>``
    (RFC 5802/7677, as ``pg_authid.rolpassword`` holds it)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def redis_acl_hash(password: str) -> str:
    """The ``#<hex>`` rule of ``ACL SETUSER``: Redis stores SHA-256 of the password."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def rabbitmq_hash(password: str, *, salt: bytes | None = None) -> str:
    """``rabbit_password_hashing_sha256``: base64(salt(4) + sha256(salt + password))."""
    salt = salt or os.urandom(4)
    return _b64(salt + hashlib.sha256(salt + password.encode()).digest())


__all__ = ["check_password", "rabbitmq_hash", "redis_acl_hash", "scram_sha256"]
