"""Credentials and secrets of the reconciler's host: git credentials, references, the runner.

* Git credentials (the Bitbucket username and password of whoever runs the reconcile) come from
  ``SDP_GIT_USERNAME`` and ``SDP_GIT_PASSWORD``, or from the file ``SDP_GIT_CREDENTIALS_FILE``
  in git-credential form (``username=...`` and ``password=...`` lines). They are returned as
  ``Secret`` values and go nowhere but the agents' request bodies.
* Secret references of the state (``{env: NAME}`` or ``{file: PATH}``; relative paths are
  relative to the state directory, ``~`` expands) are resolved at apply time, never stored,
  and only when the host's policy allows them (``trust.SecretPolicy``, checked again here
  after symlinks are resolved). Agent tokens and the spec-hash key come from the reconciler
  host's config (``hostconfig``), never from the state.
* Every value resolved here is registered with ``redaction.SECRETS`` at once, so every text
  that leaves the process is redacted of it.
* The runner (who runs this reconcile, for the audit) is ``SDP_RUNNER`` or ``user@host``: never
  the git username, which must not be written anywhere.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from sdp_node.protocol import Credentials, EnvFileMount, Secret
from sdp_reconciler.errors import CredentialsError, SdpError
from sdp_reconciler.planner.world import ResolvedEnvironment
from sdp_reconciler.redaction import SECRETS
from sdp_reconciler.state.hostconfig import HostConfig
from sdp_reconciler.state.loading import LoadedState
from sdp_reconciler.state.models import SecretRef
from sdp_reconciler.state.trust import SecretPolicy, resolved_file

USERNAME_ENV = "SDP_GIT_USERNAME"
PASSWORD_ENV = "SDP_GIT_PASSWORD"  # noqa: S105 - the variable's name
FILE_ENV = "SDP_GIT_CREDENTIALS_FILE"


def git_credentials(env: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if env is None else env
    username, password = env.get(USERNAME_ENV), env.get(PASSWORD_ENV)
    if (username is None or password is None) and env.get(FILE_ENV):
        path = Path(env[FILE_ENV]).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise CredentialsError(f"cannot read {FILE_ENV}={path}: {e.strerror}") from e
        fields = dict(line.split("=", 1) for line in lines if "=" in line)
        username, password = fields.get("username"), fields.get("password")
        if not username or not password:
            raise CredentialsError(
                f"{path} must hold 'username=...' and 'password=...' lines (git-credential form)"
            )
    if not username or not password:
        raise CredentialsError(
            f"no git credentials: set {USERNAME_ENV} and {PASSWORD_ENV}, or {FILE_ENV} (a file "
            "with username= and password= lines); deploys use the Bitbucket account of whoever "
            "runs the reconcile"
        )
    SECRETS.add_pair(username, password)
    return Credentials(username=Secret(username), password=Secret(password))


def source(env: Mapping[str, str] | None = None) -> str:
    """Where ``git_credentials`` takes them from, for messages (never the values)."""
    env = os.environ if env is None else env
    if (env.get(USERNAME_ENV) is None or env.get(PASSWORD_ENV) is None) and env.get(FILE_ENV):
        return f"{FILE_ENV} ({env[FILE_ENV]})"
    return f"{USERNAME_ENV} / {PASSWORD_ENV}"


def runner(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("SDP_RUNNER"):
        return env["SDP_RUNNER"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def resolve(reference: SecretRef, root: Path, env: Mapping[str, str] | None = None, *,
            policy: SecretPolicy | None = None) -> Secret:
    """The value a reference points at; SdpError naming the reference (never the value).

    ``policy`` is given for the state's references (the host config's own are trusted).
    """
    env = os.environ if env is None else env
    if reference.env is not None:
        problem = policy.env_problem(reference.env) if policy is not None else None
        if problem:
            raise SdpError(problem)
        value = env.get(reference.env)
        if value is None:
            raise SdpError(f"environment variable {reference.env} is not set")
        SECRETS.add(value)
        return Secret(value)
    assert reference.file is not None
    path = resolved_file(reference.file, root)
    problem = policy.file_problem(path, reference.file) if policy is not None else None
    if problem:
        raise SdpError(problem)
    try:
        value = path.read_text().rstrip("\n")
    except OSError as e:
        raise SdpError(f"cannot read secret file {reference.file}: {e.strerror}") from e
    SECRETS.add(value)
    return Secret(value)


def resolve_environments(
    state: LoadedState, env: Mapping[str, str] | None = None
) -> tuple[dict[str, ResolvedEnvironment], dict[str, str]]:
    """Every environment with its secrets resolved, and why each unresolvable one failed."""
    resolved: dict[str, ResolvedEnvironment] = {}
    errors: dict[str, str] = {}
    policy = state.host.policy
    for name, document in sorted(state.environments.items()):
        model = document.model
        try:
            secrets = {k: resolve(r, state.root, env, policy=policy)
                       for k, r in model.secrets.items()}
            files = []
            for env_file in model.files:
                if env_file.secret is not None:
                    content = resolve(env_file.secret, state.root, env, policy=policy)
                    files.append(EnvFileMount(path=env_file.path, content=content, secret=True))
                else:
                    files.append(EnvFileMount(path=env_file.path,
                                              content=Secret(env_file.content or "")))
        except SdpError as e:
            errors[name] = f"environment {name}: {e}"
            continue
        resolved[name] = ResolvedEnvironment(
            name=name, variables=dict(model.variables), secrets=secrets, files=tuple(files)
        )
    return resolved, errors


def agent_token(host: HostConfig, node: str, env: Mapping[str, str] | None = None) -> str:
    """The bearer token pinned for ``node`` on this host."""
    pin = host.model.agents.get(node)
    if pin is None:
        raise SdpError(f"node {node!r} has no agent pinned in {host.path}")
    try:
        return resolve(pin.token, host.directory, env).reveal()
    except SdpError as e:
        raise SdpError(f"agent token of node {node} ({host.path}): {e}") from None


def spec_key(host: HostConfig, env: Mapping[str, str] | None = None) -> bytes:
    try:
        return resolve(host.model.spec_hash_key, host.directory, env).reveal().encode()
    except SdpError as e:
        raise SdpError(f"spec_hash_key of {host.path}: {e}") from None
