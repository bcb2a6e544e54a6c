"""No cross-sandbox traffic: iptables rules that let only gateways reach published ports.

Every sandbox has its own Docker network, but the services' ports are published on the host,
and any container can reach the host: a container of sandbox A could ask for
``http://host.docker.internal:<B's port>/`` and get B's service. On a MICRO node the agent
therefore owns one iptables chain, ``SDP-<12 hex of installation/node>``, that lets a
published port of this node answer only

* the host itself (loopback: the agent's health checks, the node's operators), and
* the gateways: the sources in ``isolation.allow_from`` (the gateway VM's address across VMs;
  ``docker-bridge``, the subnet of Docker's default bridge network where gateway containers
  run, on one machine),

and resets every other connection to it. Where the traffic really goes (measured, docs/node.md):

* from a container on this host to any host address, Docker's userland proxy answers: the
  packets arrive on the container's bridge and traverse the filter table's ``INPUT`` chain;
* from another machine (the gateway VM), Docker DNATs the port to the container: the packets
  traverse ``FORWARD``, whose first hop is Docker's ``DOCKER-USER`` chain.

So the chain is jumped to from both, tagged with the comment ``sdp-isolation
<installation>/<node>``; its port rules match the connection's original destination port
(conntrack), the same before and after DNAT. Promises:

* the agent touches only its own chain and the two jumps that carry its comment;
* the chain is rewritten whole and atomically (``iptables-restore --noflush``) from the ports
  of this node's own containers, before a new container starts (a port is guarded before it
  answers), after a removal (a removed sandbox leaves no rule), and when the agent starts
  (rules do not survive a reboot, containers do);
* with ``isolation.enabled: false`` (or on a GATEWAY node, whose ports are public) the agent
  removes its chain instead.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable

from sdp_node.childenv import child_environment
from sdp_node.config import DOCKER_BRIDGE, NodeConfig
from sdp_node.errors import NodeError
from sdp_node.protocol import NodeType

IPTABLES_TIMEOUT = 30
COMMENT = "sdp-isolation"
ENTRY_CHAINS = ("INPUT", "DOCKER-USER")


class IsolationError(NodeError):
    code = "isolation_failed"


def chain_name(installation: str, node: str) -> str:
    digest = hashlib.sha256(f"{installation}/{node}".encode()).hexdigest()[:12]
    return f"SDP-{digest}"


def comment(installation: str, node: str) -> str:
    return f"{COMMENT} {installation}/{node}"


def _jump(entry: str, chain: str, tag: str) -> list[str]:
    match_dnat = ["-m", "conntrack", "--ctstate", "DNAT"] if entry == "DOCKER-USER" else []
    return ["-p", "tcp", *match_dnat, "-m", "comment", "--comment", tag, "-j", chain]


def rules(chain: str, *, ports: Iterable[int], sources: Iterable[str]) -> list[list[str]]:
    """The chain's rules: return for replies, loopback and allowed sources; reset the rest
    of the connections to a guarded port."""
    out = [["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
           ["-i", "lo", "-j", "RETURN"]]
    out += [["-s", source, "-j", "RETURN"] for source in sources]
    out += [["-p", "tcp", "-m", "conntrack", "--ctorigdstport", str(port),
             "-j", "REJECT", "--reject-with", "tcp-reset"] for port in sorted(set(ports))]
    return [["-A", chain, *rule] for rule in out]


Runner = Callable[[list[str], str | None], tuple[int, str]]


def restore_line(args: list[str]) -> str:
    """One rule in iptables-restore's syntax, which quotes with double quotes only (the
    values here are SDP names, addresses and numbers: never a quote or a backslash)."""
    return " ".join(f'"{a}"' if " " in a else a for a in args)


def run_command(command: list[str], stdin: str | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, errors="replace",
            env=child_environment(), timeout=IPTABLES_TIMEOUT, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return done.returncode, (done.stdout + done.stderr).strip()


class Iptables:
    """The few iptables commands the guard needs, with the xtables lock waited for."""

    def __init__(self, command: str, runner: Runner = run_command) -> None:
        self.command = command
        self._run = runner

    def run(self, *args: str) -> tuple[int, str]:
        return self._run([self.command, "-w", "5", *args], None)

    def has_chain(self, chain: str) -> bool:
        return self.run("-S", chain)[0] == 0

    def listing(self, chain: str) -> list[list[str]]:
        code, output = self.run("-S", chain)
        if code != 0:
            return []
        return [shlex.split(line) for line in output.splitlines() if line.startswith("-A ")]

    def restore(self, text: str) -> None:
        code, output = self._run([f"{self.command}-restore", "-w", "5", "--noflush"], text)
        if code != 0:
            raise IsolationError(f"{self.command}-restore refused the rules: {output}")


class PortGuard:
    """This agent's chain: the published ports of its own services, open to gateways only."""

    def __init__(
        self, config: NodeConfig, *, bridge_subnet: Callable[[], str],
        runner: Runner = run_command,
    ) -> None:
        self.enabled = config.type is NodeType.MICRO and config.isolation.enabled
        self.allow_from = list(config.isolation.allow_from)
        self.chain = chain_name(config.installation, config.name)
        self.tag = comment(config.installation, config.name)
        self.iptables = Iptables(config.isolation.iptables, runner)
        self._bridge_subnet = bridge_subnet
        self._lock = threading.Lock()
        self._written: frozenset[int] | None = None
        """the ports of the chain this agent last wrote (None: not written since it started)"""

    def sources(self) -> list[str]:
        return [self._bridge_subnet() if s == DOCKER_BRIDGE else s for s in self.allow_from]

    def sync(self, ports: Iterable[int]) -> None:
        """Make the chain guard exactly ``ports`` (or remove it when isolation is off)."""
        with self._lock:
            if not self.enabled:
                self._remove()
                self._written = None
                return
            wanted = frozenset(ports)
            try:
                self._written = None
                self._write(sorted(wanted))
                self._written = wanted
            except IsolationError as e:
                raise IsolationError(
                    f"cannot guard this node's published ports: {e} (isolation in node.yaml: "
                    "check the iptables command, or set isolation.enabled: false to run "
                    "without cross-sandbox isolation)"
                ) from e

    def covers(self, port: int) -> bool:
        """Whether the chain this agent wrote last guards ``port`` (then a deploy on it need not
        rewrite the chain first; a removal still does, so no rule outlives its container for
        long)."""
        with self._lock:
            return self._written is not None and port in self._written

    def _write(self, ports: list[int]) -> None:
        write_chain(self.iptables, self.chain, self.tag, ports=ports, sources=self.sources())

    def _remove(self) -> None:
        remove_chain(self.iptables, self.chain)

    def guarded_ports(self) -> list[int]:
        """The ports the chain rejects for foreign sources now (for tests and operators)."""
        ports = []
        for rule in self.iptables.listing(self.chain):
            if "--ctorigdstport" in rule:
                ports.append(int(rule[rule.index("--ctorigdstport") + 1]))
        return sorted(ports)


def write_chain(iptables: Iptables, chain: str, tag: str, *, ports: list[int],
                sources: list[str]) -> None:
    """Write ``chain`` whole and atomically (``iptables-restore --noflush``): the rules
    guarding ``ports`` against all but ``sources``, and the jumps to it (carrying ``tag``) from
    the entry chains that lack one."""
    lines = ["*filter", f":{chain} - [0:0]"]
    lines += [restore_line(rule) for rule in rules(chain, ports=ports, sources=sources)]
    for entry in ENTRY_CHAINS:
        if entry == "DOCKER-USER" and not iptables.has_chain(entry):
            continue  # Docker runs without iptables: only its userland proxy publishes
        jump = _jump(entry, chain, tag)
        if iptables.run("-C", entry, *jump)[0] != 0:
            lines.append(restore_line(["-I", entry, "1", *jump]))
    lines.append("COMMIT")
    iptables.restore("\n".join(lines) + "\n")


def remove_chain(iptables: Iptables, chain: str) -> None:
    """Delete the jumps to ``chain`` that carry SDP's comment, then the chain itself."""
    for entry in ENTRY_CHAINS:
        for rule in iptables.listing(entry):
            if rule[-2:] == ["-j", chain] and any(a.startswith(COMMENT) for a in rule):
                iptables.run("-D", *rule[1:])
    if iptables.has_chain(chain):
        iptables.run("-F", chain)
        iptables.run("-X", chain)


def remove_installation(installation: str, *, command: str = "iptables") -> list[str]:
    """Remove every chain of ``installation`` (all its nodes): for tests and for taking an
    installation down. Returns the chains removed."""
    iptables = Iptables(command)
    prefix = f"{COMMENT} {installation}/"
    chains = set()
    for entry in ENTRY_CHAINS:
        for rule in iptables.listing(entry):
            if any(a.startswith(prefix) for a in rule) and "-j" in rule:
                chains.add(rule[rule.index("-j") + 1])
    for chain in sorted(chains):
        remove_chain(iptables, chain)
    return sorted(chains)


__all__ = ["IsolationError", "PortGuard", "chain_name", "remove_installation", "rules",
           "write_chain"]
