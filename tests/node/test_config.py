"""node.yaml's trust settings: their defaults, and bad values refused with the key named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sdp_node.config import ConfigError, load_config


def _write(tmp_path: Path, **settings: Any) -> Path:
    config = {
        "name": "micro-1", "type": "MICRO", "installation": "demo",
        "token": {"env": "SDP_MICRO_TOKEN"}, "workspace": str(tmp_path / "ws"),
        "repositories": [
            {"name": "account", "url": "http://127.0.0.1:1/account.git", "kind": "go"},
            {"name": "erangel", "url": "http://127.0.0.1:1/erangel.git", "kind": "php"},
        ],
        **settings,
    }
    path = tmp_path / "node.yaml"
    path.write_text(json.dumps(config))
    return path


def test_defaults_harden_and_isolate(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path))
    assert config.hardening.pids_limit == 512 and config.hardening.no_new_privileges
    assert config.hardening.drop_capabilities and config.hardening.read_only_trees
    assert config.hardening.composer_user == "nobody"
    assert config.isolation.enabled and config.isolation.allow_from == ["docker-bridge"]
    go, php = config.repositories
    assert go.effective_capabilities == []
    assert php.effective_capabilities == ["SETUID", "SETGID", "KILL"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"isolation": {"allow_from": ["gateway-vm"]}},
     "isolation.allow_from: 'gateway-vm' is neither an IPv4 address or CIDR"),
    ({"isolation": {"allow_from": ["::1"]}}, "only IPv4 is guarded"),
    ({"isolation": {"iptables": "iptables; rm -rf /"}}, "is not a command name"),
    ({"hardening": {"pids_limit": 0}}, "hardening.pids_limit"),
    ({"hardening": {"no_such_setting": 1}}, "hardening.no_such_setting"),
])
def test_bad_trust_settings_are_refused_naming_the_key(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, **settings))
    assert message in str(caught.value)


def test_capability_names_are_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, repositories=[{
        "name": "erangel", "url": "http://127.0.0.1:1/e.git", "kind": "php",
        "capabilities": ["cap_setuid", "net raw"]}])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "repositories.0.capabilities.1" in str(caught.value)
    assert "'net raw' is not a capability name" in str(caught.value)


@pytest.mark.parametrize("listen", ["127.0.0.1:²", "127.0.0.1:" + "9" * 5000, "127.0.0.1:70000",
                                    "127.0.0.1:", ":3453", "127.0.0.1:x"])
def test_a_listen_address_without_a_port_number_is_refused(tmp_path: Path, listen: str) -> None:
    # '²' passes str.isdigit and int() refuses it: the agent died on a traceback at start.
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, listen=listen))
    assert "must be host:port (a port up to 65535)" in str(caught.value)
    assert load_config(_write(tmp_path, listen="127.0.0.1:3453")).listen_port == 3453
