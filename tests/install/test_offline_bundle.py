"""The offline bundle, installed on a fresh Debian 12 without network, run by systemd.

The bundle is built with ``packaging/build-bundle`` (twice, as two releases), then installed by
its ``install.sh`` in a container of the testbed's Debian 12 image (debootstrap: python3,
python3-venv, systemd) started with ``--network none`` and systemd as PID 1, so the bundle's
own units run with their sandboxing. The agent reaches the host's Docker engine through the
socket mounted at /run/docker.sock, as on a VM (a unix socket: no network). The VM is this
test's installation: the container, and the sandbox container it is given, carry its
``sdp.instance`` label and are removed by it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from sdp_testbed.images import ensure_images
from sdp_testbed.waiting import http_get, wait_for
from tests.conftest import IMAGE_CACHE
from tests.support.names import PREFIX
from tests.support.ports import port_block

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "install-test-token-0123456789abcdef"
GO_DIRS = ("/usr/lib/go-1.19", "/usr/share/go-1.19")
NODE = "micro-1"


@dataclass
class Bundle:
    release: str
    tarball: Path
    seconds: float


@dataclass
class OfflineVm:
    """A container standing in for a VM without network; commands run with docker exec."""

    container: Any
    installed: list[str] = field(default_factory=list)

    def run(self, command: str, *, check: bool = True) -> str:
        code, output = self.container.exec_run(["bash", "-c", command], demux=False)
        text = output.decode(errors="replace")
        if check:
            assert code == 0, f"{command!r} failed ({code}):\n{text}"
        return text

    def install(self, bundle: Bundle) -> float:
        started = time.monotonic()
        self.run(f"mkdir -p /root/{bundle.release} && tar -xzf /bundles/{bundle.tarball.name} "
                 f"-C /root/{bundle.release} && /root/{bundle.release}/*/install.sh")
        self.installed.append(bundle.release)
        return time.monotonic() - started

    def agent(self, path: str) -> dict[str, Any]:
        script = (
            "import json, sys, urllib.request; "
            f"request = urllib.request.Request('http://127.0.0.1:3453{path}', "
            f"headers={{'Authorization': 'Bearer {TOKEN}'}}); "
            "print(urllib.request.urlopen(request, timeout=5).read().decode())"
        )
        output = self.run(f"/opt/sdp/current/bin/python -c {shlex.quote(script)}")
        answer: dict[str, Any] = json.loads(output)
        return answer

    def agent_answers(self, path: str) -> dict[str, Any] | None:
        try:
            return self.agent(path)
        except AssertionError:
            return None

    def main_pid(self, service: str) -> int:
        return int(self.run(f"systemctl show -p MainPID --value {service}").strip())


def build(tmp: Path, release: str) -> Bundle:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "packaging/build-bundle"), "--output", str(tmp), "--release",
         release], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    tarball = Path(done.stdout.strip().splitlines()[-1])
    assert tarball.is_file() and tarball.name == f"sdp-bundle-{release}.tar.gz"
    return Bundle(release, tarball, time.monotonic() - started)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, Bundle]:
    folder = tmp_path_factory.mktemp("bundles")
    return build(folder, "0.1.0-test.a"), build(folder, "0.1.0-test.b")


@pytest.fixture
def vm(docker_client: docker.DockerClient, installation: str,
       bundles: tuple[Bundle, Bundle]) -> Iterator[OfflineVm]:
    image = ensure_images(["debian-python"], cache_dir=IMAGE_CACHE)["debian-python"]
    container = docker_client.containers.run(
        # systemd as PID 1, with / shared as on a booted machine: systemd hands a unit its
        # credentials (LoadCredential=) through a mount that must propagate, and in a
        # container it leaves Docker's private root as it is.
        image, ["sh", "-c", "mount --make-rshared / && exec /sbin/init"], detach=True,
        name=f"{PREFIX}-offline-vm-{installation}",
        labels={"sdp.instance": installation}, network_mode="none",
        # What --privileged gives, less CAP_SYS_RESOURCE (which this machine's own sandbox
        # does not grant), in a private cgroup namespace.
        cap_add=["ALL"], cap_drop=["SYS_RESOURCE"], cgroupns="private",
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        # /run is Docker's tmpfs (systemd keeps one it finds), so the engine's socket mounted
        # into it stays visible at /run/docker.sock, where the agent looks by default.
        tmpfs={"/run": "", "/run/lock": ""},
        volumes={str(bundles[0].tarball.parent): {"bind": "/bundles", "mode": "ro"},
                 str(ROOT / "state"): {"bind": "/example-state", "mode": "ro"},
                 "/var/run/docker.sock": {"bind": "/run/docker.sock", "mode": "rw"},
                 # This host's Go (glibc-linked, as Debian 12's), for the sandbox check.
                 **{d: {"bind": d, "mode": "ro"} for d in GO_DIRS}},
    )
    machine = OfflineVm(container)
    try:
        wait_for(lambda: machine.run("systemctl is-system-running", check=False).strip()
                 in ("running", "degraded") or None, what="systemd in the offline VM",
                 timeout=60)
        yield machine
    finally:
        container.remove(force=True)


def configure_agent(vm: OfflineVm, installation: str) -> None:
    node_yaml = {
        "name": NODE, "type": "MICRO", "installation": installation, "resource_prefix": PREFIX,
        "listen": "127.0.0.1:3453", "token": {"file": "/etc/sdp/node.token"},
        "workspace": "/var/lib/sdp-node", "go_cache": "/var/cache/sdp-node/gocache",
        "repositories": [{"name": "account", "url": "http://127.0.0.1:9/account.git",
                          "kind": "go"}],
    }
    vm.run(f"printf %s {shlex.quote(json.dumps(node_yaml))} >/etc/sdp/node.yaml && "
           f"umask 077 && printf %s {TOKEN} >/etc/sdp/node.token")


def start_sandbox(client: docker.DockerClient, installation: str, port: int) -> Any:
    """A running container of this agent, as a deploy leaves it (labels), serving HTTP."""
    micro = ensure_images(["micro"], cache_dir=IMAGE_CACHE)["micro"]
    labels = {"sdp.managed": "true", "sdp.instance": installation, "sdp.node": NODE,
              "sdp.sandbox": "QA-OFFLINE", "sdp.service": "account", "sdp.repository": "account",
              "sdp.branch": "main", "sdp.commit": "0" * 40, "sdp.port": str(port),
              "sdp.spec": "0" * 16, "sdp.kind": "service"}
    container = client.containers.run(
        micro, ["sh", "-c", "echo ok >/tmp/healthz && exec httpd -f -p 8080 -h /tmp"],
        detach=True, name=f"{PREFIX}-qa-offline-account-{installation}", labels=labels,
        ports={"8080/tcp": ("127.0.0.1", port)}, restart_policy={"Name": "unless-stopped"})
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz").status == 200 or None,
             what="the sandbox container to serve")
    container.reload()
    return container


class Poller:
    """GETs a URL in a loop until stopped; counts answers and failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = http_get(self.url, timeout=2).status
                self.answers += 1
                if status != 200:
                    self.failures.append(f"HTTP {status}")
            except OSError as e:
                self.failures.append(str(e))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_the_bundle_installs_offline_runs_under_systemd_and_upgrades_without_touching_sandboxes(
    vm: OfflineVm, bundles: tuple[Bundle, Bundle], docker_client: docker.DockerClient,
    installation: str,
) -> None:
    first, second = bundles
    assert vm.run("ip -o link 2>/dev/null || cat /proc/net/dev", check=False).count("eth0") == 0
    assert "network is unreachable" in vm.run(
        "python3 -c \"import socket; socket.create_connection(('151.101.0.223', 443), 3)\" 2>&1",
        check=False).lower()

    install_seconds = vm.install(first)
    assert vm.run("readlink /opt/sdp/current").strip() == f"releases/{first.release}"
    for example in ("node-micro.yaml", "node-gateway.yaml"):
        checked = vm.run(f"/opt/sdp/current/bin/sdp-node --check --config "
                         f"/etc/sdp/examples/{example}")
        assert "of installation company-sdp" in checked
    validated = vm.run("/opt/sdp/current/bin/sdp-reconcile validate --state /example-state")
    assert "valid" in validated.lower()

    configure_agent(vm, installation)
    vm.run("systemctl enable --now sdp-node.service")
    try:
        info = wait_for(lambda: vm.agent_answers("/v1/info"), what="the agent's /v1/info",
                        timeout=60)
    except TimeoutError as e:
        journal = vm.run("journalctl -u sdp-node --no-pager -o cat | tail -30", check=False)
        raise AssertionError(f"{e}; the agent's journal ends:\n{journal}") from None
    assert info["name"] == NODE and info["installation"] == installation
    first_pid = vm.main_pid("sdp-node")
    assert first_pid > 0

    port = port_block(1)[0]
    sandbox = start_sandbox(docker_client, installation, port)
    observed = vm.agent("/v1/observe")
    assert [c["name"] for c in observed["containers"]] == [sandbox.name]
    started_at = sandbox.attrs["State"]["StartedAt"]

    with Poller(f"http://127.0.0.1:{port}/healthz") as poller:
        upgrade_seconds = vm.install(second)
        assert wait_for(lambda: vm.agent_answers("/v1/info"), what="the upgraded agent",
                        timeout=60)["installation"] == installation
    assert vm.run("readlink /opt/sdp/current").strip() == f"releases/{second.release}"
    second_pid = vm.main_pid("sdp-node")
    assert second_pid not in (0, first_pid)
    assert f"/opt/sdp/releases/{second.release}/bin/python" in vm.run(
        f"tr '\\0' ' ' </proc/{second_pid}/cmdline")
    assert vm.run(f"test -f /opt/sdp/releases/{first.release}/.complete && echo kept").strip() \
        == "kept"
    sandbox.reload()
    assert sandbox.status == "running"
    assert sandbox.attrs["State"]["StartedAt"] == started_at
    assert sandbox.attrs["RestartCount"] == 0
    assert poller.failures == [] and poller.answers > 10
    assert [c["name"] for c in vm.agent("/v1/observe")["containers"]] == [sandbox.name]
    print(f"bundle {first.tarball.stat().st_size / 1e6:.1f} MB, built in {first.seconds:.1f} s; "
          f"installed in {install_seconds:.1f} s, upgraded in {upgrade_seconds:.1f} s; "
          f"{poller.answers} requests to the sandbox during the upgrade, none failed")


def test_the_unit_refuses_a_broken_node_yaml_and_the_agent_needs_its_engine(
    vm: OfflineVm, bundles: tuple[Bundle, Bundle], installation: str,
) -> None:
    vm.install(bundles[0])
    configure_agent(vm, installation)
    vm.run("sed -i 's/\"MICRO\"/\"MIKRO\"/' /etc/sdp/node.yaml")
    refused = vm.run("systemctl start sdp-node.service 2>&1; sleep 0.5; "
                     "journalctl -u sdp-node --no-pager -o cat", check=False)
    assert "type: Input should be 'MICRO', 'GATEWAY' or 'INFRA'" in refused
    assert vm.run("systemctl is-active sdp-node.service", check=False).strip() != "active"
    # An upgrade that cannot read the node's configuration switches nothing.
    upgrade = vm.run(f"mkdir -p /root/b && tar -xzf /bundles/{bundles[1].tarball.name} -C "
                     "/root/b && /root/b/*/install.sh 2>&1", check=False)
    assert "is not valid for release" in upgrade and "nothing changed" in upgrade
    assert vm.run("readlink /opt/sdp/current").strip() == f"releases/{bundles[0].release}"

    configure_agent(vm, installation)
    no_engine = vm.run("DOCKER_HOST=unix:///run/no-such.sock /opt/sdp/current/bin/"
                       "sdp-node --config /etc/sdp/node.yaml 2>&1", check=False)
    assert re.search(r"sdp-node: cannot reach the Docker engine", no_engine), no_engine


GIT_USER = "sdp-ci"
GIT_PASSWORD = "Pässwörd:€-offline"  # reaches the git server as UTF-8, through a credential
STATE_REPO = """
from pathlib import Path
from sdp_testbed.repos import commit_files, init_bare
root = Path("/example-state")
files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
init_bare(Path("/srv/git/state.git"))
print(commit_files(Path("/srv/git/state.git"), branch="main", files=files, message="state"))
"""


def test_the_reconciler_unit_follows_the_state_repository_as_a_throwaway_user(
    vm: OfflineVm, bundles: tuple[Bundle, Bundle],
) -> None:
    """sdp-reconcile.service, as shipped: DynamicUser, the git credentials as a systemd
    credential, the state repository over HTTP (the testbed git server, inside the VM)."""
    vm.install(bundles[0])
    head = vm.run(f"/opt/sdp/current/bin/python -c {shlex.quote(STATE_REPO)}").strip()
    git_env = shlex.quote(f"SDP_TESTBED_GIT_USERNAME={GIT_USER}\n"
                          f"SDP_TESTBED_GIT_PASSWORD={GIT_PASSWORD}\n")
    vm.run(f"umask 077 && printf %s {git_env} >/root/git.env && systemd-run --unit=test-git "
           "-p EnvironmentFile=/root/git.env "
           "/opt/sdp/current/bin/python -m sdp_testbed.gitserver --root /srv/git --port 8418")
    settings = {"SDP_STATE_REMOTE": "http://127.0.0.1:8418/state.git",
                "SDP_SPEC_HASH_KEY": "offline-test-spec-key", "SDP_MICRO_TOKEN": TOKEN,
                "SDP_GATEWAY_TOKEN": TOKEN, "SDP_RUNNER": "sdp-reconcile@offline-vm"}
    lines = " ".join(shlex.quote(f"{k}={v}") for k, v in settings.items())
    host = {"installation": "demo", "spec_hash_key": {"env": "SDP_SPEC_HASH_KEY"},
            "agents": {name: {"url": f"http://127.0.0.1:{port}", "token": {"env": variable}}
                       for name, port, variable in (("micro-1", 3453, "SDP_MICRO_TOKEN"),
                                                    ("gateway-1", 3454, "SDP_GATEWAY_TOKEN"))}}
    vm.run(f"printf %s {shlex.quote(json.dumps(host))} >/etc/sdp/reconciler.yaml")
    credentials = f"username={GIT_USER}\npassword={GIT_PASSWORD}\n"
    vm.run(f"umask 077 && printf '%s\\n' {lines} >/etc/sdp/reconcile.env && "
           f"printf %s {shlex.quote(credentials)} >/etc/sdp/git-credentials && "
           "systemctl start sdp-reconcile.service")
    try:
        page = wait_for(lambda: vm.run(
            "/opt/sdp/current/bin/python -c \"import urllib.request; print(urllib.request."
            "urlopen('http://127.0.0.1:3452/healthz').status)\"", check=False).strip() == "200"
            or None, what="the status page of sdp-reconcile.service", timeout=60)
    except TimeoutError as e:
        journal = vm.run("journalctl -u sdp-reconcile --no-pager -o cat | tail -30", check=False)
        raise AssertionError(f"{e}; the reconciler's journal ends:\n{journal}") from None
    assert page
    checkout = "/var/lib/private/sdp-reconcile/state"
    synced = wait_for(lambda: vm.run(f"cat {checkout}/.git/refs/heads/main", check=False).strip()
                      == head or None, what="the state checkout at the remote head", timeout=60)
    assert synced
    pid = vm.main_pid("sdp-reconcile")
    uid = vm.run(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status").strip()
    assert uid != "0"
    journal = vm.run("journalctl -u sdp-reconcile --no-pager -o cat")
    assert "LOGIN FAILED" not in journal and GIT_PASSWORD not in journal
    assert "micro-1" in journal  # the pass ran, and said the (absent) agents are unreachable


GO_MOD = "module example.invalid/check\n\ngo 1.19\n"
GO_MAIN = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("built under the unit") }\n'
# The installed unit, as it is, but running go build the way the agent does.
GO_OVERRIDE = """\
[Service]
Type=oneshot
Restart=no
ExecStartPre=
ExecStart=
ExecStart=/usr/lib/go-1.19/bin/go build -trimpath -o app .
WorkingDirectory=/var/lib/sdp-node/check
Environment=CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOPATH=/var/lib/sdp-node/go
Environment=GOCACHE=/var/cache/sdp-node/gocache
"""
GO_CHECK = f"""\
set -e
mkdir -p /var/lib/sdp-node/check /etc/systemd/system/sdp-go-check.service.d
printf %s {shlex.quote(GO_MOD)} >/var/lib/sdp-node/check/go.mod
printf %s {shlex.quote(GO_MAIN)} >/var/lib/sdp-node/check/main.go
cp /etc/systemd/system/sdp-node.service /etc/systemd/system/sdp-go-check.service
printf %s {shlex.quote(GO_OVERRIDE)} >/etc/systemd/system/sdp-go-check.service.d/go.conf
systemctl daemon-reload
systemctl start sdp-go-check.service
/var/lib/sdp-node/check/app
"""


def test_go_builds_under_the_agents_sandboxing(
    vm: OfflineVm, bundles: tuple[Bundle, Bundle],
) -> None:
    """The agent runs go build as its child: the unit's sandbox (read-only system, syscall
    filter, no new privileges...) must let the Go toolchain work. Checked with a copy of the
    installed unit whose command is go build."""
    assert all(Path(d).is_dir() for d in GO_DIRS), "golang-go is installed by scripts/setup"
    vm.install(bundles[0])
    built = vm.run(GO_CHECK + " 2>&1", check=False)
    assert built.strip().endswith("built under the unit"), (
        built + vm.run("journalctl -u sdp-go-check --no-pager -o cat", check=False))
    unit = vm.run("systemctl cat sdp-go-check.service")
    assert "SystemCallFilter=@system-service" in unit and "ProtectSystem=strict" in unit
