"""The imported runtime images, run on the real engine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from sdp_testbed.fixtures import OcpStandIn, gateway_files
from sdp_testbed.images import HASH_LABEL, KIND_LABEL, ensure_image
from sdp_testbed.waiting import http_get, wait_for, wait_for_http

from .conftest import RunContainer
from .helpers import published_port, write_tree

pytestmark = pytest.mark.docker

ALIAS_CONF = """\
Alias {prefix} /srv/erangel
<Directory /srv/erangel>
    Require all granted
    AllowOverride None
    FallbackResource {prefix}/index.php
</Directory>
"""


def run_to_completion(run_container: RunContainer, image: str, command: list[str]) -> str:
    container = run_container(image, command=command)
    status = container.wait(timeout=60)
    output = container.logs().decode()
    assert status["StatusCode"] == 0, output
    return str(output)


def test_micro_image_has_a_shell_users_and_tmp(
    micro_image: str, docker_client: Any, run_container: RunContainer
) -> None:
    labels = docker_client.images.get(micro_image).labels
    assert labels[KIND_LABEL] == "micro"
    assert len(labels[HASH_LABEL]) == 64
    output = run_to_completion(
        run_container, micro_image, ["sh", "-c", "id nobody; test -d /tmp -a -w /tmp && echo tmp"]
    )
    assert "uid=65534(nobody)" in output
    assert "tmp" in output


def test_a_current_image_is_kept(
    micro_image: str, docker_client: Any, image_cache_dir: Path
) -> None:
    image_id = docker_client.images.get(micro_image).id
    report = ensure_image("micro", cache_dir=image_cache_dir, client=docker_client)
    assert not report.built
    assert docker_client.images.get(micro_image).id == image_id


def test_cli_reports_a_current_image_and_refuses_unknown_kinds(
    micro_image: str, image_cache_dir: Path
) -> None:
    command = [sys.executable, "-m", "sdp_testbed.images", "--cache-dir", str(image_cache_dir)]
    current = subprocess.run(
        [*command, "micro"], capture_output=True, text=True, timeout=120, check=False
    )
    assert current.returncode == 0, current.stderr
    assert current.stdout.startswith(f"micro: {micro_image} current in ")
    unknown = subprocess.run(
        [*command, "alpine"], capture_output=True, text=True, timeout=120, check=False
    )
    assert unknown.returncode == 2
    assert "unknown image kind 'alpine'" in unknown.stderr


def test_php_cli_image_runs_debians_php(php_cli_image: str, run_container: RunContainer) -> None:
    script = "echo PHP_VERSION, ' ', extension_loaded('openssl') ? 'ssl' : '-', ' ', date('T');"
    output = run_to_completion(run_container, php_cli_image, ["php", "-r", script])
    assert output.startswith("8.2.")
    assert output.endswith(" ssl UTC")


def test_php_cli_image_serves_the_gateway_to_ocp_through_the_host(
    tmp_path: Path,
    php_cli_image: str,
    run_container: RunContainer,
    ocp_stand_in: OcpStandIn,
) -> None:
    tree = write_tree(
        tmp_path / "gw",
        gateway_files(revision="g2", ocp_urls={"account": ocp_stand_in.url_for_containers}),
    )
    container = run_container(
        php_cli_image,
        command=["php", "-S", "0.0.0.0:80", "/var/www/html/index.php"],
        init=True,  # php -S as PID 1 ignores SIGTERM
        volumes={str(tree): {"bind": "/var/www/html", "mode": "ro"}},
        ports={"80/tcp": ("127.0.0.1", None)},
    )
    base = f"http://127.0.0.1:{published_port(container, '80/tcp')}"
    wait_for_http(f"{base}/healthz")
    answer = http_get(f"{base}/account/ping").json()
    assert answer["body"] == {"backend": "ocp", "service": "ocp", "path": "/ping"}
    started = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - started < 5


@pytest.mark.apache
def test_php_apache_serves_the_gateway_under_an_alias_and_reloads_gracefully(
    tmp_path: Path,
    php_apache_image: str,
    run_container: RunContainer,
    ocp_stand_in: OcpStandIn,
) -> None:
    tree = write_tree(
        tmp_path / "gw",
        gateway_files(revision="g3", ocp_urls={"account": ocp_stand_in.url_for_containers}),
    )
    conf = tmp_path / "erangel.conf"
    conf.write_text(ALIAS_CONF.format(prefix="/erangel"))
    container = run_container(
        php_apache_image,
        volumes={
            str(conf): {"bind": "/etc/apache2/conf-enabled/erangel.conf", "mode": "ro"},
            str(tree): {"bind": "/srv/erangel", "mode": "ro"},
        },
        ports={"80/tcp": ("127.0.0.1", None)},
    )
    base = f"http://127.0.0.1:{published_port(container, '80/tcp')}"
    health = wait_for_http(f"{base}/erangel/healthz").json()
    assert health == {"status": "ok", "gateway_revision": "g3"}
    assert http_get(f"{base}/erangel/").status == 200
    answer = http_get(f"{base}/erangel/account/v1/login?x=1").json()
    assert answer["upstream"] == f"{ocp_stand_in.url_for_containers}/v1/login?x=1"
    assert answer["body"] == {"backend": "ocp", "service": "ocp", "path": "/v1/login?x=1"}
    assert http_get(f"{base}/erangel/unknown/x").status == 404
    assert "AH00558" not in container.logs().decode()  # ServerName is set

    # A single-file bind mount follows the inode: rewrite in place, never by rename.
    conf.write_text(conf.read_text() + ALIAS_CONF.format(prefix="/erangel-next"))
    assert http_get(f"{base}/erangel-next/healthz").status == 404
    reload = container.exec_run(["apache2ctl", "graceful"])
    assert reload.exit_code == 0, reload.output
    wait_for_http(f"{base}/erangel-next/healthz", what="the graceful reload to take effect")

    started = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - started < 5


@pytest.mark.apache
def test_php_apache_sees_a_rewritten_config_php_without_reload(
    tmp_path: Path,
    php_apache_image: str,
    run_container: RunContainer,
    ocp_stand_in: OcpStandIn,
) -> None:
    tree = write_tree(
        tmp_path / "gw",
        gateway_files(revision="g4", ocp_urls={"account": ocp_stand_in.url_for_containers}),
    )
    conf = tmp_path / "erangel.conf"
    conf.write_text(ALIAS_CONF.format(prefix="/erangel"))
    container = run_container(
        php_apache_image,
        volumes={
            str(conf): {"bind": "/etc/apache2/conf-enabled/erangel.conf", "mode": "ro"},
            str(tree): {"bind": "/srv/erangel", "mode": "ro"},
        },
        ports={"80/tcp": ("127.0.0.1", None)},
    )
    base = f"http://127.0.0.1:{published_port(container, '80/tcp')}"
    wait_for_http(f"{base}/erangel/healthz")
    assert http_get(f"{base}/erangel/account/a").json()["body"]["service"] == "ocp"
    with OcpStandIn("ocp-2") as second:
        write_tree(
            tree, gateway_files(revision="g4", ocp_urls={"account": second.url_for_containers})
        )
        # No opcache in the image (as in php:8.3-apache): the very next request sees it.
        assert http_get(f"{base}/erangel/account/a").json()["body"]["service"] == "ocp-2"


@pytest.mark.apache
def test_php_apache_is_like_the_official_image_no_mod_rewrite_and_errors_on_stderr(
    tmp_path: Path,
    php_apache_image: str,
    run_container: RunContainer,
    ocp_stand_in: OcpStandIn,
) -> None:
    """As in php:8.3-apache: mod_rewrite is available but not enabled, and Apache's error log
    is the container's stderr (its access log stdout). So a CodeIgniter .htaccess
    (RewriteEngine On) under AllowOverride All makes every request a 500, said on stderr."""
    tree = write_tree(
        tmp_path / "gw",
        gateway_files(revision="g5", ocp_urls={"account": ocp_stand_in.url_for_containers}),
    )
    assert (tree / ".htaccess").read_text().startswith("RewriteEngine On\n")
    conf = tmp_path / "erangel.conf"
    conf.write_text(ALIAS_CONF.format(prefix="/erangel").replace("None", "All"))
    container = run_container(
        php_apache_image,
        volumes={
            str(conf): {"bind": "/etc/apache2/conf-enabled/erangel.conf", "mode": "ro"},
            str(tree): {"bind": "/srv/erangel", "mode": "ro"},
        },
        ports={"80/tcp": ("127.0.0.1", None)},
    )
    base = f"http://127.0.0.1:{published_port(container, '80/tcp')}"
    answer = wait_for(lambda: http_get(f"{base}/erangel/account/x"), what="Apache to answer")
    assert answer.status == 500
    modules = container.exec_run(["apache2ctl", "-M"])
    assert modules.exit_code == 0 and b"php_module" in modules.output
    assert b"rewrite_module" not in modules.output
    available = container.exec_run(
        ["sh", "-c", "cat /etc/apache2/mods-available/rewrite.load; "
         "test -f /usr/lib/apache2/modules/mod_rewrite.so && echo present; "
         "readlink /var/log/apache2/error.log /var/log/apache2/access.log"])
    assert available.output.decode().splitlines() == [
        "LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so",
        "present", "/dev/stderr", "/dev/stdout"]
    invalid = "/srv/erangel/.htaccess: Invalid command 'RewriteEngine'"
    def stderr_with_the_error() -> str | None:
        stderr = container.logs(stdout=False, stderr=True).decode()
        return stderr if invalid in stderr else None

    wait_for(stderr_with_the_error, what="Apache's error line on the container's stderr")
    stdout = container.logs(stdout=True, stderr=False).decode()
    assert invalid not in stdout and '"GET /erangel/account/x HTTP/1.1" 500' in stdout


def test_missing_image_is_an_error_not_a_pull(run_container: RunContainer) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        run_container("sdp-testbed/does-not-exist:never")


def test_wait_for_reports_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_for(lambda: None, what="the impossible", timeout=0.2)


def test_wait_for_takes_false_for_not_yet() -> None:
    """``wait_for(lambda: n >= 3)``: False is not an answer (it once ended the wait at once)."""
    calls = iter(range(100))
    assert wait_for(lambda: next(calls) >= 3, what="three calls", interval=0.001) is True
    assert next(calls) == 4
    with pytest.raises(TimeoutError, match="never true"):
        wait_for(lambda: False, what="never true", timeout=0.2)
