"""The fixture Go service: every variant built with the real go, offline, and run in micro."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sdp_testbed.fixtures import GREET_MODULE, Dependency, go_service_files
from sdp_testbed.gobuild import GoBuildResult, ModuleSource, go_build
from sdp_testbed.gomodcache import GREET_VERSION, greet_go_sum
from sdp_testbed.waiting import http_get, wait_for_http

from .conftest import RunContainer
from .helpers import published_port, write_tree

# Quotes, a backslash and non-ASCII: the constant must survive Go's string syntax.
ODD_REVISION = 'r2 "quoted" \\ é 😀'


def build(
    tmp_path: Path,
    *,
    go_cache: Path,
    gomodcache: Path,
    modules: ModuleSource = "modcache",
    **variant: Any,
) -> tuple[Path, GoBuildResult]:
    src = write_tree(tmp_path / "src", go_service_files(service="account", **variant))
    result = go_build(
        src, output=src / "app-account", gocache=go_cache, gomodcache=gomodcache, modules=modules
    )
    return src, result


def test_go_mod_has_a_go_line_debians_go_accepts() -> None:
    go_mod = go_service_files(service="account", revision="r1")["go.mod"].decode()
    assert go_mod.startswith("module example.invalid/account\n")
    assert "\ngo 1.19\n" in go_mod
    assert "toolchain" not in go_mod


def test_go_sum_matches_the_hash_go_itself_records(module_cache: Path) -> None:
    ziphash = module_cache / f"cache/download/{GREET_MODULE}/@v/{GREET_VERSION}.ziphash"
    zip_line = greet_go_sum().splitlines()[0]
    assert zip_line == f"{GREET_MODULE} {GREET_VERSION} {ziphash.read_text().strip()}"


@pytest.mark.parametrize(
    ("dependency", "modules"),
    [("none", "modcache"), ("vendor", "vendor"), ("vendor", "modcache"), ("modcache", "modcache")],
)
def test_variants_build_offline(
    tmp_path: Path,
    go_cache: Path,
    module_cache: Path,
    empty_module_cache: Path,
    dependency: Dependency,
    modules: ModuleSource,
) -> None:
    needs_cache = dependency == "modcache" or (dependency == "vendor" and modules == "modcache")
    src, result = build(
        tmp_path,
        go_cache=go_cache,
        gomodcache=module_cache if needs_cache else empty_module_cache,
        modules=modules,
        revision="r1",
        dependency=dependency,
    )
    assert result.ok, result.output
    assert (src / "app-account").stat().st_size > 0


def test_modcache_variant_without_the_module_fails_naming_it(
    tmp_path: Path, go_cache: Path, empty_module_cache: Path
) -> None:
    _, result = build(
        tmp_path,
        go_cache=go_cache,
        gomodcache=empty_module_cache,
        revision="r1",
        dependency="modcache",
    )
    assert not result.ok
    assert GREET_MODULE in result.output
    assert "GOPROXY=off" in result.output


def test_compile_error_variant_fails_with_a_syntax_error(
    tmp_path: Path, go_cache: Path, empty_module_cache: Path
) -> None:
    _, result = build(
        tmp_path,
        go_cache=go_cache,
        gomodcache=empty_module_cache,
        revision="r1",
        compile_error=True,
    )
    assert not result.ok
    assert "syntax error" in result.output


@pytest.mark.docker
@pytest.mark.parametrize(
    ("dependency", "revision"),
    [("none", "r1"), ("vendor", ODD_REVISION), ("modcache", "r3")],
)
def test_variants_answer_from_the_micro_image(
    tmp_path: Path,
    go_cache: Path,
    module_cache: Path,
    micro_image: str,
    run_container: RunContainer,
    dependency: Dependency,
    revision: str,
) -> None:
    src, result = build(
        tmp_path,
        go_cache=go_cache,
        gomodcache=module_cache,
        modules="vendor" if dependency == "vendor" else "modcache",
        revision=revision,
        dependency=dependency,
    )
    assert result.ok, result.output
    container = run_container(
        micro_image,
        command=["/src/app-account"],
        environment={"PORT": "8080", "SDP_SANDBOX": "qa-login-error"},
        volumes={str(src): {"bind": "/src", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
    )
    base = f"http://127.0.0.1:{published_port(container, '8080/tcp')}"
    assert wait_for_http(f"{base}/healthz").text == "ok"
    answer = http_get(f"{base}/v1/users?id=1")
    assert answer.status == 200
    expected = {
        "service": "account",
        "revision": revision,
        "path": "/v1/users",
        "env": {"SDP_SANDBOX": "qa-login-error"},
    }
    if dependency != "none":
        expected["greeting"] = "hello, account"
    assert answer.json() == expected


@pytest.mark.docker
def test_unhealthy_variant_fails_its_health_check_but_answers(
    tmp_path: Path,
    go_cache: Path,
    empty_module_cache: Path,
    micro_image: str,
    run_container: RunContainer,
) -> None:
    src, result = build(
        tmp_path, go_cache=go_cache, gomodcache=empty_module_cache, revision="r1", healthy=False
    )
    assert result.ok, result.output
    container = run_container(
        micro_image,
        command=["/src/app-account"],
        volumes={str(src): {"bind": "/src", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
    )
    base = f"http://127.0.0.1:{published_port(container, '8080/tcp')}"
    assert wait_for_http(f"{base}/healthz", status=500).status == 500
    assert http_get(f"{base}/").json()["env"] == {"SDP_SANDBOX": ""}
