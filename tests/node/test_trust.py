"""Branch code never runs with SDP's privileges (docs/node.md, "Trust").

Each attack is a real one on real components, with a canary that shows it would have worked
without the defence: a ``composer.json`` whose scripts write a marker and copy the agent's
environment (token included), a commit that carries its own ``app-<repo>``, and shims in
front of go, composer and php that record the environment the agent really gave them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from sdp_node.protocol import Credentials, SetRoutes
from sdp_testbed.erangel import gateway_files
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get
from tests.node.test_gateway import php_gateway_repository
from tests.support.agents import AgentProcess, free_port
from tests.support.names import NAMES
from tests.support.plans import deploy, deploy_gateway, run, spec

SECRET_CANARY = "sdp-agent-environment-canary-4f1c"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can reach (composer runs as nobody), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="sdp-trust-", dir=tempfile.gettempdir()))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _hostile_composer_json(*, marker: Path, leak: Path, agent_pid: int) -> bytes:
    script = f"touch {marker}; cat /proc/{agent_pid}/environ > {leak}"
    return json.dumps({
        "name": "sdp/hostile", "type": "project", "require": {},
        "repositories": [{"packagist.org": False}],
        "scripts": {"pre-install-cmd": script, "post-install-cmd": script,
                    "post-autoload-dump": script},
    }).encode()


def test_composer_scripts_of_a_branch_never_run_and_the_agent_token_stays_unread(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, composer: str, shared_dir: Path,
    tmp_path: Path,
) -> None:
    path, url = make_repo("erangel")
    agent = make_agent(name="gateway-1", node_type="GATEWAY", reload_command=[],
                       repositories=[php_gateway_repository(url, images)])
    assert agent.process is not None
    marker, leak = shared_dir / "scripts-ran", shared_dir / "agent-environ"
    files = {**gateway_files(revision="h", ocp_urls={}), "composer.json":
             _hostile_composer_json(marker=marker, leak=leak, agent_pid=agent.process.pid)}
    commit = commit_files(path, branch="develop", message="hostile", files=files)

    # The canary: run as SDP used to, composer runs the scripts as root and reads the token.
    control = tmp_path / "control"
    control.mkdir()
    (control / "composer.json").write_bytes(files["composer.json"])
    subprocess.run([composer, "install", "--no-interaction"], cwd=control, check=True,
                   capture_output=True, env={**os.environ, "COMPOSER_ALLOW_SUPERUSER": "1",
                                             "COMPOSER_HOME": str(tmp_path / "home")})
    assert marker.exists() and agent.token.encode() in leak.read_bytes()
    marker.unlink()
    leak.unlink()

    outcome = run(agent.client(), deploy_gateway(spec(
        sandbox="h1", service="gateway", repository="erangel", branch="develop",
        commit=commit, port=free_port()), {}), canary)
    assert outcome.ok, outcome.last()
    tree = agent.workspace / "gateways" / "h1" / commit
    assert (tree / "vendor" / "autoload.php").is_file()  # composer did run, without scripts
    assert any("--no-scripts --no-plugins (as nobody)" in line for line in outcome.logs())
    assert not marker.exists()
    assert not leak.exists()
    assert (tree / "vendor").stat().st_uid == os.geteuid()  # the tree is the agent's again


def _shims(folder: Path, dumps: Path, tools: list[str]) -> Path:
    """``folder`` with a shim per tool that records its environment, then runs the tool."""
    folder.mkdir(mode=0o755)
    for tool in tools:
        real = shutil.which(tool)
        assert real is not None, tool
        shim = folder / tool
        shim.write_text(f'#!/bin/sh\ncat /proc/$$/environ > "{dumps}/{tool}-$$.env"\n'
                        f'exec {real} "$@"\n')
        shim.chmod(0o755)
    return folder


CHILD_VARIABLES = {
    "PATH", "LANG", "HOME", "GOPATH", "GOCACHE", "GOMODCACHE", "GOPROXY", "GOFLAGS",
    "GOTOOLCHAIN", "CGO_ENABLED", "GOENV", "GOSUMDB", "GOTELEMETRY", "COMPOSER_HOME",
    "COMPOSER_NO_AUDIT", "COMPOSER_ALLOW_SUPERUSER",
}


def test_every_child_process_gets_a_minimal_environment_without_the_token(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, shared_dir: Path,
) -> None:
    dumps = shared_dir / "dumps"
    dumps.mkdir(mode=0o777)
    dumps.chmod(0o777)
    shims = _shims(shared_dir / "bin", dumps, ["go", "composer", "php"])
    secrets_env = {"PATH": f"{shims}:{os.environ['PATH']}",
                   "SDP_GIT_PASSWORD": SECRET_CANARY, "AWS_SECRET_ACCESS_KEY": SECRET_CANARY}

    account_path, account_url = make_repo("account")
    account = commit_files(account_path, branch="main", message="1",
                           files=go_service_files(service="account", revision="env-1"))
    gateway_path, gateway_url = make_repo("erangel")
    gateway = commit_files(gateway_path, branch="develop", message="1", files=gateway_files(
        revision="env", ocp_urls={"account": "http://ocp.invalid"}, with_composer=True))
    micro = make_agent(name="micro-1", start=False, repositories=[
        {"name": "account", "url": account_url, "kind": "go", "image": images["micro"]}])
    gw = make_agent(name="gateway-1", node_type="GATEWAY", reload_command=[], start=False,
                    repositories=[php_gateway_repository(gateway_url, images)])
    for agent in (micro, gw):
        agent.start_env = secrets_env
        agent.start()

    assert run(micro.client(), deploy(spec(
        sandbox="e1", service="account", repository="account", branch="main", commit=account,
        port=free_port())), canary).ok
    assert run(gw.client(), deploy_gateway(spec(  # php -l checks the rewritten config.php
        sandbox="e1", service="gateway", repository="erangel", branch="develop",
        commit=gateway, port=free_port()), {"account": "http://host.docker.internal:1"}),
        canary).ok
    change = run(gw.client(), [SetRoutes(
        step_id="r", sandbox="e1", container=NAMES.container("e1", "gateway"),
        routes={"account": "http://host.docker.internal:2"})], None)
    assert change.ok, change.last()

    seen: dict[str, list[dict[str, str]]] = {}
    for dump in dumps.iterdir():
        raw = dump.read_bytes()
        assert micro.token.encode() not in raw and gw.token.encode() not in raw, dump.name
        assert SECRET_CANARY.encode() not in raw, dump.name
        env = dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
        seen.setdefault(dump.name.split("-")[0], []).append(env)
    assert set(seen) == {"go", "composer", "php"}, sorted(seen)
    for tool, envs in seen.items():
        for env in envs:
            assert set(env) <= CHILD_VARIABLES, (tool, sorted(set(env) - CHILD_VARIABLES))


def test_a_committed_app_binary_is_never_executed_and_go_build_still_runs(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, docker_client: docker.DockerClient,
) -> None:
    path, url = make_repo("account")
    trap = b"#!/bin/sh\necho SDP-COMMITTED-BINARY-RAN\nexec sleep 600\n"
    commit = commit_files(path, branch="main", message="ships its own binary",
                          files={**go_service_files(service="account", revision="built-1"),
                                 "app-account": trap},
                          executable=frozenset({"app-account"}))
    agent = make_agent(repositories=[{"name": "account", "url": url, "kind": "go",
                                      "image": images["micro"], "health_timeout_seconds": 20}])
    port = free_port()
    outcome = run(agent.client(), deploy(spec(sandbox="b1", service="account",
                                              repository="account", branch="main",
                                              commit=commit, port=port)), canary)
    assert outcome.ok, outcome.last()
    assert any(line.startswith("$ go build") for line in outcome.logs())
    assert not any("already built" in line for line in outcome.logs())
    assert http_get(f"http://127.0.0.1:{port}/").json()["revision"] == "built-1"

    container = docker_client.containers.get(NAMES.container("b1", "account"))
    # The command is the built binary; a container started while its commit built runs it
    # through SDP's own launcher, which waits for that binary (sdp_node/launcher.py).
    command = container.attrs["Config"]["Cmd"]
    assert command in (["/sdp/app-account"],
                       ["/sdp-launch", "/sdp/app-account", "660", "/sdp/app-account"]), command
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    built = agent.workspace / "builds" / "account" / commit / "app-account"
    assert mounts["/sdp"]["Source"] == str(built.parent)
    assert not mounts["/sdp"]["RW"] and not mounts["/src"]["RW"]
    assert sorted(p.name for p in built.parent.iterdir()) == ["app-account", "build.json"]
    if command[0] == "/sdp-launch":
        launcher = Path(mounts["/sdp-launch"]["Source"])
        assert launcher.is_relative_to(agent.workspace / "launcher") and not \
            mounts["/sdp-launch"]["RW"]
    assert b"SDP-COMMITTED-BINARY-RAN" not in container.logs()
    tree_file = agent.workspace / "trees" / "account" / commit / "app-account"
    assert tree_file.read_bytes() == trap  # still there, untouched, never run

    # "Already built" is SDP's record of the build, not a file's presence.
    again = run(agent.client(), deploy(spec(sandbox="b2", service="account",
                                            repository="account", branch="main",
                                            commit=commit, port=free_port())), canary)
    assert again.ok and any("already built for this commit" in line for line in again.logs())
    (built.parent / "build.json").unlink()  # without SDP's record, it is built again
    third = run(agent.client(), deploy(spec(sandbox="b3", service="account",
                                            repository="account", branch="main",
                                            commit=commit, port=free_port())), canary)
    assert third.ok, third.last()
    assert any(line.startswith("$ go build") for line in third.logs())
    assert (built.parent / "build.json").is_file()
