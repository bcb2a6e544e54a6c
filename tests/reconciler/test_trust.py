"""The reconciler host decides what the state may reach: secret references, agents, links.

Each test is an attack a state committer could try, with a canary: the value or the file it
wants must not come back, and the problem is reported at its file:line:col before any action.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sdp_reconciler.errors import SdpError, StateError
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.state.hostconfig import HostConfig, load_host_config
from sdp_reconciler.state.loading import load_state
from sdp_reconciler.state.models import SecretRef
from tests.state.conftest import copy_example, relative_lines

CANARY = "canary-7f3a9c-secret-value"


def host_config(folder: Path, **extra: object) -> HostConfig:
    path = folder / "reconciler.yaml"
    document = {
        "installation": "demo",
        "spec_hash_key": {"env": "SDP_SPEC_HASH_KEY"},
        "agents": {
            "micro-1": {"url": "http://127.0.0.1:3453", "token": {"env": "SDP_SECRET_MICRO"}},
            "gateway-1": {"url": "http://127.0.0.1:3454",
                          "token": {"file": str(folder / "gateway.token")}},
        },
        **extra,
    }
    path.write_text(json.dumps(document))
    return load_host_config(path)


def problems(root: Path, host: HostConfig, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(StateError) as caught:
        load_state(root, host=host.rules(env or {}))
    return relative_lines(root, caught.value)


def write_environment(root: Path, secrets: dict[str, dict[str, str]]) -> None:
    (root / "environments" / "qa.yaml").write_text(json.dumps(
        {"environment": "qa", "secrets": secrets}))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "state")


# --- secret references ---------------------------------------------------------------------


def test_the_hosts_own_references_are_refused_even_under_the_prefix(root: Path,
                                                                    tmp_path: Path) -> None:
    host = host_config(tmp_path)
    write_environment(root, {"TOKEN": {"env": "SDP_SECRET_MICRO"},
                             "FILE": {"file": str(tmp_path / "gateway.token")},
                             "CONFIG": {"file": str(tmp_path / "reconciler.yaml")}})
    reported = problems(root, host)
    assert len(reported) == 3
    assert all("one of SDP's own secrets" in line for line in reported)
    assert [line.split(": ")[1] for line in reported] == [
        "secrets.TOKEN.env", "secrets.FILE.file", "secrets.CONFIG.file"]
    assert all(line.startswith("environments/qa.yaml:1:") for line in reported)


def test_files_are_read_only_under_the_hosts_directories_after_links(root: Path,
                                                                     tmp_path: Path) -> None:
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    (allowed / "jwt").write_text(CANARY)
    outside = tmp_path / "outside"
    outside.write_text(CANARY)
    (allowed / "escape").symlink_to(outside)
    host = host_config(tmp_path, secrets={"directories": [str(allowed)]})
    write_environment(root, {"GOOD": {"file": str(allowed / "jwt")},
                             "LINKED": {"file": str(allowed / "escape")}})
    reported = problems(root, host)
    assert len(reported) == 1 and "secrets.LINKED.file" in reported[0]
    assert "outside the directories the reconciler host allows" in reported[0]
    assert CANARY not in "\n".join(reported)


def test_resolution_checks_again_when_a_link_is_swapped_after_validation(
    root: Path, tmp_path: Path
) -> None:
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    (allowed / "jwt").write_text("fine")
    host = host_config(tmp_path, secrets={"directories": [str(allowed)]})
    write_environment(root, {"JWT": {"file": str(allowed / "jwt")}})
    state = load_state(root, host=host.rules({}))
    (tmp_path / "shadow").write_text(CANARY)
    (allowed / "jwt").unlink()
    (allowed / "jwt").symlink_to(tmp_path / "shadow")
    _environments, errors = creds.resolve_environments(state, {})
    assert "outside the directories" in errors["qa"] and CANARY not in errors["qa"]


def test_the_prefix_is_the_hosts(root: Path, tmp_path: Path) -> None:
    host = host_config(tmp_path, secrets={"env_prefix": "QA_VAULT_"})
    write_environment(root, {"OK": {"env": "QA_VAULT_JWT"},
                             "NO": {"env": "SDP_SECRET_QA_JWT"}})
    reported = problems(root, host)
    assert len(reported) == 1 and "secrets.NO.env" in reported[0]
    assert "starting with 'QA_VAULT_'" in reported[0]


def test_the_git_credentials_file_is_never_a_secret(root: Path, tmp_path: Path) -> None:
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    credentials = allowed / "git-credentials"
    credentials.write_text(f"username=u\npassword={CANARY}\n")
    host = host_config(tmp_path, secrets={"directories": [str(allowed)]})
    write_environment(root, {"GIT": {"file": str(credentials)}})
    reported = problems(root, host, {"SDP_GIT_CREDENTIALS_FILE": str(credentials)})
    assert len(reported) == 1 and "one of SDP's own secrets" in reported[0]


# --- agents ---------------------------------------------------------------------------------


def test_a_state_cannot_move_a_pinned_agent(root: Path, tmp_path: Path) -> None:
    host = host_config(tmp_path)
    nodes = root / "nodes.yaml"
    nodes.write_text(nodes.read_text().replace("http://127.0.0.1:3453", "http://127.0.0.1:4999"))
    assert problems(root, host) == [
        "nodes.yaml:14:16: nodes[0].agent_url: agent URL 'http://127.0.0.1:4999' differs "
        "from the URL pinned for node 'micro-1' on this reconciler host "
        "(http://127.0.0.1:3453); the state cannot move an agent: fix or remove agent_url "
        "here, or change the pin in reconciler.yaml",
    ]


def test_a_node_without_a_pin_and_another_installation_are_refused(root: Path,
                                                                   tmp_path: Path) -> None:
    host = host_config(tmp_path, installation="staging")
    pins = {"micro-1": {"url": "http://127.0.0.1:3453", "token": {"env": "T"}}}
    (tmp_path / "reconciler.yaml").write_text(json.dumps(
        {**json.loads((tmp_path / "reconciler.yaml").read_text()), "agents": pins}))
    host = load_host_config(tmp_path / "reconciler.yaml")
    reported = problems(root, host)
    assert any("installation 'staging' (reconciler.yaml), not 'demo'" in r for r in reported)
    assert any("node 'gateway-1' has no agent pinned on this reconciler host" in r
               for r in reported)


def test_the_host_config_is_checked_at_file_line_col(tmp_path: Path) -> None:
    path = tmp_path / "reconciler.yaml"
    path.write_text("installation: demo\nspec_hash_key: not-a-reference\nagents:\n"
                    "  micro-1: {url: 'ftp://x', token: {env: T}}\nextra: 1\n")
    with pytest.raises(StateError) as caught:
        load_host_config(path)
    text = str(caught.value)
    assert f"{path}:2:16: spec_hash_key: literal secret value" in text
    assert f"{path}:4:18: agents.micro-1.url: agent URL 'ftp://x'" in text
    assert f"{path}:5:1: extra: unknown key 'extra'" in text
    assert "not-a-reference" not in text
    assert text.endswith("problems in the reconciler host config")


def test_tokens_and_the_key_come_from_the_host(tmp_path: Path) -> None:
    host = host_config(tmp_path)
    (tmp_path / "gateway.token").write_text("gateway-token-from-a-file\n")
    env = {"SDP_SECRET_MICRO": "micro-token", "SDP_SPEC_HASH_KEY": "key"}
    assert creds.agent_token(host, "micro-1", env) == "micro-token"
    assert creds.agent_token(host, "gateway-1", env) == "gateway-token-from-a-file"
    assert creds.spec_key(host, env) == b"key"
    with pytest.raises(SdpError, match="no agent pinned"):
        creds.agent_token(host, "infra-1", env)


# --- state files ------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["sandboxes/QA-EVIL.yaml", "environments", "ports.yaml"])
def test_a_symlink_in_the_state_is_refused_unread(root: Path, tmp_path: Path,
                                                  link: str) -> None:
    target = tmp_path / "target"
    target.write_text(f"sandbox: {CANARY}\n")
    path = root / link
    if path.is_dir():
        os.rename(path, tmp_path / "moved")
        path.symlink_to(tmp_path / "moved", target_is_directory=True)
    else:
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    with pytest.raises(StateError) as caught:
        load_state(root)
    assert relative_lines(root, caught.value) == [
        f"{link}:1:1: is a symbolic link: state files and folders must be real files in the "
        "state repository (SDP never follows links there)",
    ]
    assert CANARY not in str(caught.value) and str(tmp_path / "target") not in str(caught.value)


def test_a_resolved_reference_is_hidden_from_every_text(tmp_path: Path) -> None:
    from sdp_reconciler.redaction import SECRETS

    (tmp_path / "s").write_text("p@ss w0rd/é")
    from sdp_reconciler.state.trust import build_policy

    policy = build_policy(env_prefix="SDP_SECRET_", directories=[tmp_path], own_references=(),
                          own_files=(), env={}, source="test")
    creds.resolve(SecretRef(file=str(tmp_path / "s")), tmp_path, {}, policy=policy)
    text = "got p@ss w0rd/é, p%40ss%20w0rd%2F%C3%A9 and p%40ss+w0rd%2F%C3%A9"
    assert SECRETS(text) == "got ***, *** and ***"


def test_the_shipped_example_host_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "packaging" / "examples" / "reconciler.yaml"
    host = load_host_config(example)
    assert set(host.model.agents) == {"micro-1", "gateway-1"}
    assert host.model.secrets.env_prefix == "SDP_SECRET_"
