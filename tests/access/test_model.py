"""access.yaml through the loader and the JSON Schema; SSH public keys made by ssh-keygen.

The broken files and their exact ``file:line:col`` messages are corpus cases
(``tests/state/corpus/*access*``); here: the valid file, the optional file, real keys of every
type ssh-keygen makes, and check-jsonschema agreeing with the loader.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sdp_reconciler.access.model import Role, parse_public_key
from sdp_reconciler.access.permissions import DEFAULT_PERMISSIONS, permissions_of, roles_of
from tests.access.gitrepo import Person, access_yaml
from tests.state.conftest import SCHEMAS, copy_example, loads, problems_of
from tests.state.test_schemas import check_jsonschema


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "state")


def test_the_state_loads_as_before_without_access_yaml(state_dir: Path) -> None:
    assert loads(state_dir).access is None


def test_a_valid_access_yaml_is_part_of_the_loaded_state(
        state_dir: Path, people: dict[str, Person]) -> None:
    text = access_yaml({people["ops"]: ["ADMIN"], people["rina"]: ["QA", "VIEWER"]},
                       require_signed=True, roles={"VIEWER": ["deploy"]})

    state = loads(state_dir, {"access.yaml": text})

    assert state.access is not None
    access = state.access.model
    assert access.require_signed_commits
    assert roles_of(access, "rina") == (Role.QA, Role.VIEWER)
    assert roles_of(access, "nobody") == ()
    assert permissions_of(access, [Role.VIEWER]) == {"deploy"}
    assert permissions_of(access, [Role.QA]) == DEFAULT_PERMISSIONS[Role.QA]
    assert access.user_for_email("RINA@company.invalid") == "rina"
    key = access.users["ops"].key
    assert key is not None and key.openssh == " ".join(people["ops"].public_key.split()[:2])


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_every_key_type_ssh_keygen_makes_is_accepted(tmp_path: Path, kind: str) -> None:
    key = tmp_path / kind
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True,
                   timeout=60)
    line = key.with_suffix(".pub").read_text()

    parsed = parse_public_key(line)

    assert line.startswith(parsed.openssh)


def test_a_private_key_is_refused_and_never_echoed(tmp_path: Path) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   timeout=60)
    private = key.read_text()

    with pytest.raises(ValueError, match="private key") as caught:
        parse_public_key(private)

    body = private.splitlines()[1]
    assert body not in str(caught.value)


def test_check_jsonschema_accepts_what_the_loader_accepts(
        state_dir: Path, people: dict[str, Person]) -> None:
    path = state_dir / "access.yaml"
    path.write_text(access_yaml({people["ops"]: ["ADMIN"], people["rina"]: ["QA"]},
                                require_signed=True, roles={"QA": ["deploy"]}))

    result = check_jsonschema(SCHEMAS / "access.schema.json", path)

    assert result.returncode == 0, result.stdout + result.stderr
    loads(state_dir)


@pytest.mark.parametrize("text, expected", [
    ("users:\n  ops: {email: ops@company.invalid, roles: [ADMN]}\n", "$.users.ops.roles[0]"),
    ("users:\n  ops: {email: ops@company.invalid, roles: []}\n", "$.users.ops.roles"),
    ("users:\n  ops: {email: ops@company.invalid, roles: [ADMIN]}\nroles: {ADMIN: []}\n",
     "$.roles"),
    ("users:\n  ops: {email: ops@company.invalid, roles: [ADMIN], signing_key: 'ssh-dss AAA'}\n",
     "$.users.ops.signing_key"),
])
def test_check_jsonschema_rejects_what_the_loader_rejects(state_dir: Path, text: str,
                                                         expected: str) -> None:
    path = state_dir / "access.yaml"
    path.write_text(text)

    result = check_jsonschema(SCHEMAS / "access.schema.json", path)

    assert result.returncode == 1, result.stdout
    assert expected in result.stdout
    assert any(line.startswith("access.yaml:") for line in problems_of(state_dir))
