"""The fixture PHP gateway, read and run with the real php; the OCP stand-in it forwards to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sdp_testbed.fixtures import GATEWAY_CONFIG_PATH, OcpStandIn, gateway_files
from sdp_testbed.waiting import http_get, wait_for_http

from .helpers import free_port, write_tree

PHP = shutil.which("php")
pytestmark = pytest.mark.usefixtures("php")  # a missing php fails the tests: CI installs it

READ_CONFIG = (
    "define('BASEPATH', 'x'); include $argv[1]; echo json_encode($config, JSON_UNESCAPED_SLASHES);"
)


def php_config(tree: Path) -> dict[str, object]:
    assert PHP is not None
    result = subprocess.run(
        [PHP, "-r", READ_CONFIG, str(tree / GATEWAY_CONFIG_PATH)],
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(result.stdout)
    assert isinstance(config, dict)
    return config


def test_php_reads_every_route_and_nothing_from_comments_or_strings(tmp_path: Path) -> None:
    routes = {
        "account": "http://127.0.0.1:9001",
        "payment": "http://127.0.0.1:9002/pay/",
        "login": "http://127.0.0.1:9003",
        "notification": "http://127.0.0.1:9004",
        "wallet": "https://wallet.example.invalid/api",
    }
    tree = write_tree(tmp_path, gateway_files(revision="g1", ocp_urls=routes))
    config = php_config(tree)
    for service, url in routes.items():
        assert config[f"{service}_url"] == url
    assert config["account_url_timeout"] == 30
    assert "$config['account_url'] = 'x';" in str(config["release_note"])
    assert "$config['account_url'] = 'x';" in str(config["route_help"])


def test_config_file_mixes_spellings_and_decoys(tmp_path: Path) -> None:
    routes = {s: f"http://127.0.0.1:{9000 + i}" for i, s in enumerate(["a", "b", "c", "d"])}
    text = gateway_files(revision="g1", ocp_urls=routes)[GATEWAY_CONFIG_PATH].decode()
    assert text.startswith("<?php defined('BASEPATH') OR exit('No direct script access allowed');")
    assert "$config['a_url'] = 'http://127.0.0.1:9000';" in text
    assert '$config[ "b_url" ]   =   "http://127.0.0.1:9001" ;' in text
    assert "// $config['account_url'] =" in text
    assert "/*" in text and "$config['account_url'] = 'http://retired.invalid';" in text


def test_config_cannot_be_run_directly(tmp_path: Path) -> None:
    assert PHP is not None
    tree = write_tree(tmp_path, gateway_files(revision="g1", ocp_urls={}))
    result = subprocess.run(
        [PHP, str(tree / GATEWAY_CONFIG_PATH)], capture_output=True, text=True, check=False
    )
    assert result.stdout == "No direct script access allowed"


def test_every_php_file_lints(tmp_path: Path) -> None:
    assert PHP is not None
    tree = write_tree(
        tmp_path,
        gateway_files(revision="it's \\ odd", ocp_urls={"account": "http://127.0.0.1:1"}),
    )
    for path in tree.rglob("*.php"):
        subprocess.run([PHP, "-l", str(path)], capture_output=True, check=True)


@pytest.mark.parametrize(
    "url", ["http://x/'; system('id'); //", 'http://x/"', "http://x/$y", "ftp://x", "http://x\\"]
)
def test_route_values_that_need_escaping_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="account"):
        gateway_files(revision="g1", ocp_urls={"account": url})


@pytest.fixture
def php_gateway(
    tmp_path: Path,
    ocp_stand_in: OcpStandIn,
    start_process: Callable[..., subprocess.Popen[str]],
) -> str:
    """The gateway under `php -S` on 127.0.0.1, routing account and payment to the stand-in."""
    assert PHP is not None
    closed_port = free_port()
    routes = {
        "account": ocp_stand_in.url_for_host,
        "payment": f"{ocp_stand_in.url_for_host}/payment-api/",
        "dead": f"http://127.0.0.1:{closed_port}",
    }
    tree = write_tree(tmp_path / "gateway", gateway_files(revision="g7", ocp_urls=routes))
    port = free_port()
    start_process(
        [PHP, "-S", f"127.0.0.1:{port}", "-t", str(tree), str(tree / "index.php")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    return base


def test_gateway_forwards_to_the_service_url(php_gateway: str, ocp_stand_in: OcpStandIn) -> None:
    answer = http_get(f"{php_gateway}/account/v1/login?user=qa")
    assert answer.status == 200
    assert answer.json() == {
        "gateway_revision": "g7",
        "service": "account",
        "upstream": f"{ocp_stand_in.url_for_host}/v1/login?user=qa",
        "upstream_status": 200,
        "body": {"backend": "ocp", "service": "ocp", "path": "/v1/login?user=qa"},
        "path_info": "/account/v1/login",  # php -S sets it for a router script
    }
    payment = http_get(f"{php_gateway}/payment/charge").json()
    assert payment["body"]["path"] == "/payment-api/charge"
    assert ocp_stand_in.requests == ["/v1/login?user=qa", "/payment-api/charge"]


def test_gateway_health_unknown_service_and_dead_upstream(php_gateway: str) -> None:
    assert http_get(f"{php_gateway}/").json() == {"status": "ok", "gateway_revision": "g7"}
    unknown = http_get(f"{php_gateway}/inventory/x")
    assert unknown.status == 404
    assert unknown.json()["service"] == "inventory"
    # account_url_timeout is a config key, not a service: no route hides behind it.
    assert http_get(f"{php_gateway}/account_url_timeout/x").status == 404
    dead = http_get(f"{php_gateway}/dead/x")
    assert dead.status == 502
    assert dead.json()["error"] == "upstream unreachable"


@pytest.mark.usefixtures("composer")
def test_composer_install_works_offline(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path / "gateway", gateway_files(revision="g1", ocp_urls={}, with_composer=True)
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "COMPOSER_HOME": str(tmp_path / "composer-home"),
        "COMPOSER_ALLOW_SUPERUSER": "1",
        # Any attempt to reach a repository fails the install instead of leaving the machine.
        "COMPOSER_DISABLE_NETWORK": "1",
    }
    result = subprocess.run(
        ["composer", "install", "--no-dev", "--no-interaction", "--no-progress"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tree / "vendor" / "autoload.php").is_file()


def test_ocp_stand_in_answers_any_get(ocp_stand_in: OcpStandIn) -> None:
    answer = http_get(f"{ocp_stand_in.url_for_host}/a/b?c=d")
    assert answer.json() == {"backend": "ocp", "service": "ocp", "path": "/a/b?c=d"}
    assert ocp_stand_in.url_for_containers == f"http://host.docker.internal:{ocp_stand_in.port}"
