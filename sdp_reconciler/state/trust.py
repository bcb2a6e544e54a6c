"""What the reconciler host lets the state do: which secrets it may reference, which agents
it may address. Decided by the host (``hostconfig``), never by the state.

A state committer writes ``secrets: {X: {env: NAME}}`` or ``{file: PATH}``; the reconciler
resolves it on its host and hands the value to the sandbox's containers. Unchecked, a commit
could ask for the host's git password, an agent token or ``/etc/shadow``. So:

* environment variables only under the host's prefix (``reconciler.yaml``
  ``secrets.env_prefix``, default ``SDP_SECRET_``);
* files only under the host's directories (``secrets.directories``, none by default), judged
  after symlinks are resolved, never under ``/proc``, ``/sys`` or ``/dev``;
* SDP's own secrets never, whatever the prefix and directories say: the git credentials'
  variables and file, the webhook secret, the history URL, the host config itself and every
  variable and file it references (agent tokens, the spec-hash key).

Agents: each node's URL is pinned on the host; a ``nodes.yaml`` that names another URL for a
pinned node, or a node with no pin, is a problem before any request.

``HostRules`` (the policy, the pins, the installation) is a plain value handed to the loader;
its rules report every violation at the reference's ``file:line:col`` before any action, and
``credentials.resolve`` checks the policy again when it reads (so a symlink swapped after
validation is still refused).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from msgspec import Struct

from sdp_reconciler.state.models import SecretRef

OWN_VARIABLES = frozenset({
    "SDP_GIT_USERNAME", "SDP_GIT_PASSWORD", "SDP_GIT_CREDENTIALS_FILE", "SDP_WEBHOOK_SECRET",
    "SDP_WEBHOOK_SECRET_FILE", "SDP_HISTORY", "SDP_RECONCILER_CONFIG", "SDP_SPEC_HASH_KEY",
    "SDP_SMTP_PASSWORD",
})
"""SDP's own variables: never a state's secret, even under a careless prefix."""
KERNEL_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))
DEFAULT_ENV_PREFIX = "SDP_SECRET_"


class SecretPolicy(Struct, frozen=True):
    env_prefix: str
    directories: tuple[Path, ...]
    own_variables: frozenset[str]
    own_files: frozenset[Path]
    source: str
    """where the policy comes from, for messages (the host config's path, or the default)"""

    def env_problem(self, name: str) -> str | None:
        if name in self.own_variables:
            return (f"{name} is one of SDP's own secrets (credentials, tokens, keys) and can "
                    "never be referenced by the state")
        if not name.startswith(self.env_prefix):
            example = self.env_prefix + name.removeprefix("SDP_")
            return (f"environment variable {name} is not allowed: the reconciler host allows "
                    f"only variables starting with {self.env_prefix!r} ({self.source}); "
                    f"give the value another name there, e.g. {example}")
        return None

    def file_problem(self, resolved: Path, written: str) -> str | None:
        """Why the file ``written`` (resolved to ``resolved``) may not be read, or None."""
        if resolved in self.own_files:
            return (f"secret file {written!r} is one of SDP's own secrets and can never be "
                    "referenced by the state")
        for kernel in KERNEL_DIRS:
            if resolved == kernel or kernel in resolved.parents:
                return f"secret file {written!r} is under {kernel}, which SDP never reads"
        if not any(resolved == d or d in resolved.parents for d in self.directories):
            allowed = ", ".join(str(d) for d in self.directories) or "none"
            return (f"secret file {written!r} is outside the directories the reconciler host "
                    f"allows (secrets.directories: {allowed}; {self.source})")
        return None


class HostRules(Struct, frozen=True):
    """The reconciler host's rules for a state: secret policy, agent pins, installation."""

    policy: SecretPolicy
    pins: Mapping[str, str] | None = None
    """node -> its pinned agent URL; None when no host config is at hand (``validate`` on a
    workstation): agents are then not checked"""
    installation: str | None = None


def resolved_file(reference: str, base: Path) -> Path:
    """A file reference as the host would read it: ``~`` expanded, relative to ``base``,
    symlinks resolved."""
    path = Path(reference).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def build_policy(*, env_prefix: str, directories: Iterable[Path],
                 own_references: Iterable[tuple[SecretRef, Path]], own_files: Iterable[Path],
                 env: Mapping[str, str] | None, source: str) -> SecretPolicy:
    """The policy, with SDP's own variables and files gathered from the host's references."""
    env = os.environ if env is None else env
    variables = set(OWN_VARIABLES)
    files = {p.resolve() for p in own_files}
    for reference, base in own_references:
        if reference.env is not None:
            variables.add(reference.env)
        elif reference.file is not None:
            files.add(resolved_file(reference.file, base))
    if env.get("SDP_GIT_CREDENTIALS_FILE"):
        files.add(Path(env["SDP_GIT_CREDENTIALS_FILE"]).expanduser().resolve())
    return SecretPolicy(
        env_prefix=env_prefix, directories=tuple(d.resolve() for d in directories),
        own_variables=frozenset(variables), own_files=frozenset(files), source=source,
    )


__all__ = ["DEFAULT_ENV_PREFIX", "KERNEL_DIRS", "OWN_VARIABLES", "HostRules", "SecretPolicy",
           "build_policy", "default_rules", "resolved_file"]


def default_rules(env: Mapping[str, str] | None = None) -> HostRules:
    """The rules without a host config: default prefix, no secret directories, no pins."""
    policy = build_policy(env_prefix=DEFAULT_ENV_PREFIX, directories=(), own_references=(),
                          own_files=(), env=env,
                          source="the default policy: no reconciler.yaml on this host")
    return HostRules(policy=policy)
