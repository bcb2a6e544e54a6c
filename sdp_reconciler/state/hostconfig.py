"""The reconciler host's own settings (``reconciler.yaml``): what the state may never decide.

The state repository is written by many people; the reconciler host holds the credentials. So
the things that decide where credentials go live here, in a file on the host, outside the
state repository:

* **agent pins**: which URL and which bearer token belong to each node. The state's
  ``nodes.yaml`` names nodes and their addresses but cannot move an agent: a node without a
  pin, or whose ``agent_url`` differs from its pin, is a problem before any request, and an
  agent must prove it holds the pinned token (``sdp_node.protocol.identity_proof``) before
  the token or any git credential is sent to it;
* the **spec-hash key** (an HMAC key: a state that could point it at another secret could
  brute-force that secret offline from the hashes on the containers);
* the **secret-reference policy**: which environment variables (a prefix) and which
  directories environment secrets may be read from (``trust``);
* the **page**: which proxy addresses may set forwarded headers;
* the **history**'s retention (deployments 90 days, audit rows 730, by default);
* the **webhooks**: the secret Bitbucket signs push webhooks with (``webhooks.secret``, or
  ``$SDP_WEBHOOK_SECRET``) and which Bitbucket repository is which SDP repository when
  their names differ.

References inside this file (``{env: NAME}`` / ``{file: PATH}``) may name anything on the host
(the file is the host administrator's); relative file paths are relative to this file. Found at
``$SDP_RECONCILER_CONFIG``, else ``/etc/sdp/reconciler.yaml``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from msgspec import Struct
from pydantic import AfterValidator, Field, ValidationError, field_validator

from sdp_reconciler.errors import SdpError, StateError
from sdp_reconciler.state.locations import Location, Problem
from sdp_reconciler.state.models import SCHEMA_BASE, AgentUrl, Frozen, Name, SecretRef
from sdp_reconciler.state.sources import SourceError, load_source
from sdp_reconciler.state.trust import DEFAULT_ENV_PREFIX, HostRules, build_policy, default_rules

CONFIG_ENV = "SDP_RECONCILER_CONFIG"
DEFAULT_PATH = Path("/etc/sdp/reconciler.yaml")


class AgentPin(Frozen):
    """Where the reconciler reaches one node's agent, and the token it proves itself with."""

    url: AgentUrl = Field(description="the agent's URL, e.g. http://10.0.0.5:3453")
    token: SecretRef = Field(description="the agent's bearer token, as a reference")


def _check_prefix(value: str) -> str:
    if value and not value.replace("_", "A").isalnum():
        raise ValueError(f"env_prefix {value!r} may hold only letters, digits and '_'")
    return value


class SecretSources(Frozen):
    """Where environment secrets may come from on this host."""

    env_prefix: Annotated[str, AfterValidator(_check_prefix)] = Field(
        default=DEFAULT_ENV_PREFIX,
        description="environments may reference only variables starting with this prefix",
    )
    directories: list[Path] = Field(
        default_factory=list,
        description="environments may reference only files under these directories (after "
        "symlinks are resolved); none by default",
    )

    @field_validator("directories")
    @classmethod
    def _absolute(cls, value: list[Path]) -> list[Path]:
        for directory in value:
            if not directory.is_absolute():
                raise ValueError(f"secret directory {str(directory)!r} must be absolute")
        return value


class PageSettings(Frozen):
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of reverse proxies whose X-Forwarded-For is "
        "believed; none by default",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


class HistorySettings(Frozen):
    retention_days: int = Field(
        default=90, ge=1, description="deployments, their events and passes are kept this long")
    audit_retention_days: int = Field(
        default=730, ge=1, description="audit rows are kept this long (longer, by default)")


class WebhookSettings(Frozen):
    """``watch``'s ``POST /hooks/bitbucket``: who may call it, and what a push names."""

    secret: SecretRef | None = Field(
        default=None,
        description="the webhook secret Bitbucket signs with (X-Hub-Signature), as a "
        "reference; $SDP_WEBHOOK_SECRET overrides it. Without either the endpoint refuses "
        "every request",
    )
    repositories: dict[str, Name] = Field(
        default_factory=dict,
        description="Bitbucket repository (slug, or PROJECT/slug, workspace/slug) -> the SDP "
        "repository it is (an agent's repository name), where the names differ",
    )


class HostConfigFile(Frozen):
    """``reconciler.yaml``: the reconciler host's settings, never part of the state."""

    model_config = {
        "json_schema_extra": {"$id": f"{SCHEMA_BASE}/reconciler.schema.json"},
        "title": "SDP reconciler host",
        "frozen": True,
        "extra": "forbid",
    }
    installation: Name = Field(description="the installation this host reconciles")
    spec_hash_key: SecretRef = Field(
        description="key of the spec-hash HMAC; the same on every host of the installation"
    )
    agents: dict[Name, AgentPin] = Field(description="node name -> its pinned agent")
    secrets: SecretSources = Field(default_factory=SecretSources)
    page: PageSettings = Field(default_factory=PageSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)


class HostConfig(Struct, frozen=True):
    """A loaded ``reconciler.yaml`` and where it is (its references are relative to it)."""

    model: HostConfigFile
    path: Path

    @property
    def directory(self) -> Path:
        return self.path.parent

    def own_references(self) -> list[SecretRef]:
        """Every reference this file makes: SDP's own secrets, never for the state."""
        hook = [self.model.webhooks.secret] if self.model.webhooks.secret else []
        return [self.model.spec_hash_key, *(pin.token for pin in self.model.agents.values()),
                *hook]

    def rules(self, env: Mapping[str, str] | None = None) -> HostRules:
        """What this host lets a state do: its secret policy, its agent pins."""
        secrets = self.model.secrets
        policy = build_policy(
            env_prefix=secrets.env_prefix, directories=secrets.directories,
            own_references=[(r, self.directory) for r in self.own_references()],
            own_files=[self.path], env=env, source=f"reconciler.yaml at {self.path}",
        )
        return HostRules(policy=policy,
                         pins={name: pin.url for name, pin in self.model.agents.items()},
                         installation=self.model.installation)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env[CONFIG_ENV]).expanduser() if env.get(CONFIG_ENV) else DEFAULT_PATH


def find_host_config(env: Mapping[str, str] | None = None) -> HostConfig | None:
    """The host config when one is configured or at the default path, else None."""
    path = config_path(env)
    try:
        present = path.exists()
    except OSError as e:  # a folder this user may not enter
        raise SdpError(f"cannot read the reconciler host config {path}: {e.strerror}") from e
    if not present and not (env if env is not None else os.environ).get(CONFIG_ENV):
        return None
    return load_host_config(path)


def require_host_config(env: Mapping[str, str] | None = None) -> HostConfig:
    """The host config; an error saying where to put it when there is none."""
    path = config_path(env)
    try:
        present = path.exists()
    except OSError as e:
        raise SdpError(f"cannot read the reconciler host config {path}: {e.strerror}") from e
    if not present:
        raise SdpError(
            f"no reconciler host config at {path} (set {CONFIG_ENV} to its path): the agents' "
            "URLs and tokens and the spec-hash key are pinned there, outside the state "
            "repository. See docs/operations.md, 'The reconciler host'."
        )
    return load_host_config(path)


def host_rules(env: Mapping[str, str] | None = None) -> HostRules:
    """This host's rules for a state: its config's, else the default ones (no pins)."""
    host = find_host_config(env)
    return host.rules(env) if host is not None else default_rules(env)


def load_host_config(path: Path) -> HostConfig:
    """Load and validate ``path``; StateError with every problem at file:line:col."""
    display = str(path)
    if path.is_symlink():
        # Followed on purpose: an administrator may link /etc/sdp/reconciler.yaml elsewhere.
        path = path.resolve()
    try:
        source = load_source(path, display)
    except SourceError as e:
        raise StateError([e.problem], subject="the reconciler host config") from None
    if not isinstance(source.data, dict):
        raise StateError([Problem(Location(display), "", "expected a mapping of settings")],
                         subject="the reconciler host config")
    from sdp_reconciler.state.loading import validation_problems

    try:
        model = HostConfigFile.model_validate(source.data)
    except ValidationError as e:
        raise StateError(validation_problems(e, source, HostConfigFile),
                         subject="the reconciler host config") from None
    return HostConfig(model=model, path=path)


__all__ = [
    "CONFIG_ENV", "DEFAULT_ENV_PREFIX", "AgentPin", "HostConfig", "HostConfigFile",
    "PageSettings", "SecretSources", "WebhookSettings", "config_path", "find_host_config",
    "host_rules", "load_host_config",
    "require_host_config",
]
