"""Real state repositories for the access tests, made with the git CLI.

``StateRepo`` is a git repository whose ``state/`` folder starts as a copy of the example
state; ``commit`` commits everything as a given person, SSH-signed with a key when asked
(``git -c gpg.format=ssh -c user.signingkey=KEY commit -S``, which runs ``ssh-keygen -Y sign``).
The host's git configuration is ignored. ``Person`` holds a real ed25519 key pair made by
``ssh-keygen``. Nothing here starts a long-running process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sdp_reconciler.access.authorize import authorize_range
from sdp_reconciler.access.decision import AccessDecision

EXAMPLE_STATE = Path(__file__).resolve().parents[2] / "state"
SANDBOX = "sandboxes/QA-LOGIN-ERROR.yaml"


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    key: Path
    """the private key file; the public one is beside it (``.pub``)"""

    @property
    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()


def make_person(name: str, directory: Path) -> Person:
    key = directory / f"{name}_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, capture_output=True, timeout=30)
    return Person(name, f"{name}@company.invalid", key)


def access_yaml(users: Mapping[Person, Sequence[str]], *, require_signed: bool = False,
                roles: Mapping[str, Sequence[str]] | None = None,
                keys: bool = False) -> str:
    """access.yaml naming each person with their roles (and their keys, with ``keys``)."""
    document: dict[str, object] = {"users": {
        person.name: {"email": person.email, "roles": list(role_names),
                      **({"signing_key": person.public_key} if keys or require_signed else {})}
        for person, role_names in users.items()
    }}
    if roles is not None:
        document["roles"] = {k: list(v) for k, v in roles.items()}
    if require_signed:
        document["require_signed_commits"] = True
    return json.dumps(document, indent=1) + "\n"


class StateRepo:
    def __init__(self, root: Path, *, example: bool = True) -> None:
        self.root = root
        self.state = root / "state"
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        if example:
            shutil.copytree(EXAMPLE_STATE, self.state)
        else:
            self.state.mkdir()

    def _env(self, person: Person | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", HOME=str(self.root))
        if person is not None:
            env.update(GIT_AUTHOR_NAME=person.name, GIT_AUTHOR_EMAIL=person.email,
                       GIT_COMMITTER_NAME=person.name, GIT_COMMITTER_EMAIL=person.email)
        return env

    def git(self, *args: str, person: Person | None = None) -> str:
        result = self.try_git(*args, person=person)
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
        return result.stdout.strip()

    def try_git(self, *args: str,
                person: Person | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                              text=True, env=self._env(person), timeout=60, check=False)

    def write(self, files: Mapping[str, str | None]) -> None:
        """Files relative to ``state/``; None deletes."""
        for relative, text in files.items():
            path = self.state / relative
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)

    def replace(self, relative: str, old: str, new: str) -> None:
        path = self.state / relative
        text = path.read_text()
        assert old in text, f"{old!r} is not in {relative}"
        path.write_text(text.replace(old, new, 1))

    def commit(self, person: Person, message: str = "change", *,
               files: Mapping[str, str | None] | None = None, sign: Person | None = None) -> str:
        """Commit everything as ``person`` (signed with ``sign``'s key when given)."""
        self.write(files or {})
        self.git("add", "-A", person=person)
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={sign.key}"] if sign else []
        self.git(*signing, "commit", "-q", "--allow-empty", *(["-S"] if sign else []),
                 "-m", message, person=person)
        return self.head()

    def head(self, revision: str = "HEAD") -> str:
        return self.git("rev-parse", revision)

    def authorize(self, base: str | None, head: str = "HEAD", *,
                  check_worktree: bool = False) -> AccessDecision:
        return authorize_range(self.state, base, head, check_worktree=check_worktree)
