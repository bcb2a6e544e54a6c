"""No cross-sandbox traffic: a sandbox's published ports answer its gateway, never another
sandbox's containers (docs/node.md, "No cross-sandbox traffic").

On one machine, with real agents and real containers: sandbox A's account container asks for
B's published port through ``host.docker.internal`` (the attack the issue found) and gets no
answer, and the reverse; each sandbox's gateway still reaches its own account; the host
itself still does. Across VMs, a network namespace joined to the host by a veth pair stands in
for the gateway VM and for another host of the VM network: Docker DNATs their connections
(the FORWARD path), and only the address in ``isolation.allow_from`` gets an answer.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from sdp_node.isolation import chain_name, remove_installation
from sdp_node.protocol import Credentials, RemoveContainer
from sdp_testbed.erangel import gateway_files
from sdp_testbed.go_service import go_service_files
from sdp_testbed.repos import commit_files
from sdp_testbed.waiting import http_get
from tests.node.test_gateway import php_gateway_repository
from tests.support.agents import AgentProcess, free_port
from tests.support.names import NAMES
from tests.support.plans import deploy, deploy_gateway, run, spec


def _iptables(*args: str) -> str:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True,
                          check=True).stdout


def ask_from_container(container: docker.models.containers.Container, port: int) -> str | None:
    """GET / of the host's ``port`` from inside ``container`` (via host.docker.internal, as
    a gateway would): the answer's body, or None when nothing answered."""
    hosts = container.exec_run(["cat", "/etc/hosts"]).output.decode()
    address = next(line.split()[0] for line in hosts.splitlines()
                   if line.endswith("host.docker.internal"))
    _code, output = container.exec_run(["sh", "-c", (
        f'printf "GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n" | nc -w 3 {address} {port}')])
    text = output.decode(errors="replace")
    return text.split("\r\n\r\n", 1)[1] if text.startswith("HTTP/1.") else None


@dataclass
class TwoSandboxes:
    micro: AgentProcess
    ports: dict[str, int]
    gateway_ports: dict[str, int]


@pytest.fixture
def two_sandboxes(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials,
) -> TwoSandboxes:
    account_path, account_url = make_repo("account")
    account = commit_files(account_path, branch="main", message="1",
                           files=go_service_files(service="account", revision="iso-1"))
    gateway_path, gateway_url = make_repo("erangel")
    gateway = commit_files(gateway_path, branch="develop", message="1", files=gateway_files(
        revision="iso", ocp_urls={"account": "http://ocp.invalid"}))
    micro = make_agent(name="micro-1", repositories=[
        {"name": "account", "url": account_url, "kind": "go", "image": images["micro"]}])
    gw = make_agent(name="gateway-1", node_type="GATEWAY", reload_command=[],
                    repositories=[php_gateway_repository(gateway_url, images)])
    ports, gateway_ports = {}, {}
    for sandbox in ("A", "B"):
        ports[sandbox], gateway_ports[sandbox] = free_port(), free_port()
        assert run(micro.client(), deploy(spec(
            sandbox=sandbox, service="account", repository="account", branch="main",
            commit=account, port=ports[sandbox])), canary).ok
        assert run(gw.client(), deploy_gateway(spec(
            sandbox=sandbox, service="gateway", repository="erangel", branch="develop",
            commit=gateway, port=gateway_ports[sandbox]),
            {"account": f"http://host.docker.internal:{ports[sandbox]}"}), canary).ok
    return TwoSandboxes(micro, ports, gateway_ports)


def _account_of(
    sandbox: str, docker_client: docker.DockerClient
) -> docker.models.containers.Container:
    return docker_client.containers.get(NAMES.container(sandbox, "account"))


def test_a_sandbox_container_gets_no_answer_from_another_sandbox_while_gateways_do(
    two_sandboxes: TwoSandboxes, docker_client: docker.DockerClient, installation: str,
) -> None:
    ports = two_sandboxes.ports
    a, b = _account_of("A", docker_client), _account_of("B", docker_client)
    assert ask_from_container(a, ports["B"]) is None
    assert ask_from_container(b, ports["A"]) is None
    for sandbox in ("A", "B"):  # each gateway still reaches its own sandbox's account
        through = http_get(f"http://127.0.0.1:{two_sandboxes.gateway_ports[sandbox]}"
                           "/erangel/account/ping").json()
        assert through["body"]["env"]["SDP_SANDBOX"] == sandbox
        direct = http_get(f"http://127.0.0.1:{ports[sandbox]}/").json()  # the host itself
        assert direct["env"]["SDP_SANDBOX"] == sandbox

    # The rules are the agent's own, tagged with its installation and node.
    chain = chain_name(installation, "micro-1")
    assert f'--comment "sdp-isolation {installation}/micro-1" -j {chain}' in _iptables(
        "-S", "INPUT")
    assert f"-j {chain}" in _iptables("-S", "DOCKER-USER")
    listing = _iptables("-S", chain)
    assert all(f"--ctorigdstport {ports[s]} " in listing for s in ("A", "B"))

    # The canary: without the rules (a reboot flushes them), A reaches B; the agent puts
    # them back when it starts.
    remove_installation(installation)
    assert ask_from_container(a, ports["B"]) is not None
    two_sandboxes.micro.stop()
    two_sandboxes.micro.start()
    assert ask_from_container(a, ports["B"]) is None

    # A removed sandbox leaves no rule behind.
    assert run(two_sandboxes.micro.client(), [RemoveContainer(
        step_id="rm", container=NAMES.container("B", "account"))], None).ok
    listing = _iptables("-S", chain)
    assert f"--ctorigdstport {ports['B']} " not in listing
    assert f"--ctorigdstport {ports['A']} " in listing


# --- across VMs ----------------------------------------------------------------------------------


@dataclass
class Host:
    """A network namespace joined to this host by a veth pair: another machine on the VM
    network, whose address is ``address`` and which reaches this host at ``host_address``."""

    namespace: str
    address: str
    host_address: str

    def get(self, port: int) -> str | None:
        script = (
            "import socket,sys\n"
            f"s=socket.create_connection(({self.host_address!r},{port}),timeout=3)\n"
            "s.sendall(b'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\n"
            "data=b''\n"
            "while chunk := s.recv(65536): data += chunk\n"
            "sys.stdout.buffer.write(data)\n"
        )
        done = subprocess.run(["ip", "netns", "exec", self.namespace, sys.executable, "-c",
                               script], capture_output=True, timeout=30, check=False)
        if done.returncode != 0 or b"\r\n\r\n" not in done.stdout:
            return None
        return done.stdout.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


@pytest.fixture
def vm_hosts() -> Iterator[dict[str, Host]]:
    tag = uuid.uuid4().hex[:6]
    octet = random.randrange(0, 256)  # 198.18.0.0/15 is for network tests, never routed
    made: list[str] = []
    hosts = {}
    try:
        for index, role in enumerate(("gateway-vm", "other")):
            namespace = f"sdpt-{tag}-{index}"
            outside, inside = f"st{tag}{index}h", f"st{tag}{index}n"  # at most 15 characters
            base = f"198.18.{octet}.{index * 4}"
            prefix = base.rsplit(".", 1)[0]
            host_address, address = f"{prefix}.{index * 4 + 1}", f"{prefix}.{index * 4 + 2}"
            for command in (
                ["ip", "netns", "add", namespace],
                ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
                ["ip", "link", "set", inside, "netns", namespace],
                ["ip", "addr", "add", f"{host_address}/30", "dev", outside],
                ["ip", "link", "set", outside, "up"],
                ["ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", inside],
                ["ip", "-n", namespace, "link", "set", inside, "up"],
                ["ip", "-n", namespace, "link", "set", "lo", "up"],
                ["ip", "-n", namespace, "route", "add", "default", "via", host_address],
            ):
                subprocess.run(command, check=True, capture_output=True)
                if command[:3] == ["ip", "netns", "add"]:
                    made.append(namespace)
            hosts[role] = Host(namespace, address, host_address)
        yield hosts
    finally:
        for namespace in made:  # deleting the namespace deletes its veth pair
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


def test_across_vms_only_the_gateway_vm_address_reaches_published_ports(
    make_agent: Callable[..., AgentProcess], make_repo: Callable[[str], tuple[Path, str]],
    images: dict[str, str], canary: Credentials, vm_hosts: dict[str, Host], installation: str,
) -> None:
    path, url = make_repo("account")
    commit = commit_files(path, branch="main", message="1",
                          files=go_service_files(service="account", revision="vm-1"))
    gateway_vm, other = vm_hosts["gateway-vm"], vm_hosts["other"]
    micro = make_agent(name="micro-1", repositories=[
        {"name": "account", "url": url, "kind": "go", "image": images["micro"]}],
        isolation={"allow_from": [gateway_vm.address]})
    port = free_port()
    assert run(micro.client(), deploy(spec(
        sandbox="S", service="account", repository="account", branch="main", commit=commit,
        port=port)), canary).ok

    answer = gateway_vm.get(port)
    assert answer is not None and json.loads(answer)["env"]["SDP_SANDBOX"] == "S"
    assert other.get(port) is None
    counters = _iptables("-L", chain_name(installation, "micro-1"), "-v", "-n", "-x")
    rejected = next(line for line in counters.splitlines() if f"ctorigdstport {port} " in line
                    or line.rstrip().endswith(f"ctorigdstport {port} reject-with tcp-reset"))
    assert int(rejected.split()[0]) > 0  # it was this agent's rule that refused it
    assert http_get(f"http://127.0.0.1:{port}/").status == 200  # and the host itself
    remove_installation(installation)
    assert other.get(port) is not None  # the canary: without the rules, the other host gets in
