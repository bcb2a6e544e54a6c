"""What a data entry gives its sandbox's containers, and the password behind it (pure).

**Passwords are derived, never stored.** A sandbox user's password is
``base64url(HMAC-SHA256(spec_hash_key, "sdp-data-password/1" | installation | kind |
resource))``: the reconciler host's spec-hash key (already a pinned secret of that host, stable
across runs) under a context of its own. So a fresh CI clone computes the same password, the
pure planner can build the containers' environment (and their spec hashes, from a digest)
without asking an agent, nothing ever writes a password to SQLite, a file or a step result,
and the agent gets it only inside the ensure step that sets it (as a ``Secret``). Rotating the
spec-hash key rotates every password in the same pass that recreates every container.

``injected_env`` builds the plain variables and the secret ones for one entry, from the INFRA
node's observed server (``DataServerInfo``: the address containers use) and SDP's names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from sdp_node.naming import ResourceNames
from sdp_node.protocol import DataKind, DataServerInfo, Secret
from sdp_reconciler.state.models import DataEntry, DataSetting, variable_names

PASSWORD_CONTEXT = "sdp-data-password/1"  # noqa: S105 - an HMAC context, not a secret


def resource_name(names: ResourceNames, sandbox: str, entry: str, kind: DataKind) -> str:
    """The database, Redis user or vhost of a sandbox's entry (``ResourceNames``)."""
    match kind:
        case DataKind.POSTGRESQL:
            return names.database(sandbox, entry)
        case DataKind.REDIS:
            return names.redis_user(sandbox, entry)
        case DataKind.RABBITMQ:
            return names.rabbitmq_vhost(sandbox, entry)


def data_password(key: bytes, *, installation: str, kind: DataKind, resource: str) -> Secret:
    """The sandbox user's password: 43 URL-safe characters, the same on every run."""
    message = "\n".join([PASSWORD_CONTEXT, installation, kind.value, resource]).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return Secret(base64.urlsafe_b64encode(digest).decode().rstrip("="))


def injected_env(
    name: str, entry: DataEntry, *, sandbox: str, names: ResourceNames,
    server: DataServerInfo, password: Secret,
) -> tuple[dict[str, str], dict[str, Secret]]:
    """(plain variables, secret variables) the sandbox's containers get for entry ``name``."""
    resource = resource_name(names, sandbox, name, entry.kind)
    values: dict[DataSetting, str] = {
        DataSetting.HOST: server.host, DataSetting.PORT: str(server.port),
        DataSetting.USER: resource, DataSetting.NAME: resource, DataSetting.VHOST: resource,
        DataSetting.PREFIX: resource + ":",
    }
    env: dict[str, str] = {}
    secret_env: dict[str, Secret] = {}
    for setting, variable in variable_names(name, entry).items():
        if setting is DataSetting.PASSWORD:
            secret_env[variable] = password
        else:
            env[variable] = values[setting]
    return env, secret_env


__all__ = ["PASSWORD_CONTEXT", "data_password", "injected_env", "resource_name"]
