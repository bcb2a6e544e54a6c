"""The nodes page's live survey: each agent asked what it runs and serves, with short timeouts.

For every node of ``nodes.yaml`` (in parallel): is its agent reachable; its containers (with
their sandbox, service, commit and published port from the ``sdp.*`` labels), the ports in use,
its networks and any foreign objects in SDP's way; the repositories it serves and their
branches, listed through the agent with the reconciler host's git credentials (the same ones
deploys use; never a viewer's login). Every wait of every call is capped at ``timeout``
seconds (``NodeClient``'s ``cap``), so one dead node cannot hold the page. Error texts are
redacted with the agent tokens and git credentials before they are shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from msgspec import Struct, field

from sdp_node.protocol import (
    LABEL_COMMIT,
    LABEL_PORT,
    LABEL_SANDBOX,
    LABEL_SERVICE,
    Credentials,
)
from sdp_reconciler.errors import SdpError
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.observe.agents import pinned_client
from sdp_reconciler.observe.node_client import NodeClient
from sdp_reconciler.redaction import SECRETS
from sdp_reconciler.state.hostconfig import HostConfig, require_host_config
from sdp_reconciler.state.loading import LoadedState
from sdp_reconciler.state.models import Node


class ContainerLine(Struct):
    name: str
    state: str
    status: str
    sandbox: str | None
    service: str | None
    commit: str | None
    port: str | None
    aside: bool


class RepositoryLine(Struct):
    name: str
    kind: str
    image: str
    branches: dict[str, str] | None = None
    problem: str | None = None


class NodeReport(Struct):
    name: str
    type: str
    agent_url: str
    address: str
    public_address: str
    port_range: str
    reachable: bool = False
    problem: str | None = None
    version: str | None = None
    installation: str | None = None
    containers: list[ContainerLine] = field(default_factory=list)
    ports_in_use: list[int] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    repositories: list[RepositoryLine] = field(default_factory=list)


def survey(state: LoadedState, env: Mapping[str, str], *, timeout: float) -> list[NodeReport]:
    nodes = sorted(state.nodes.model.nodes, key=lambda n: n.name)
    try:
        credentials: Credentials | None = creds.git_credentials(env)
        no_credentials = None
    except SdpError as e:
        credentials, no_credentials = None, f"branches not listed: {e}"
    try:
        host: HostConfig | None = require_host_config(env)
        no_host = None
    except SdpError as e:
        host, no_host = None, str(e)

    def one(node: Node) -> NodeReport:
        pin = host.model.agents.get(node.name) if host is not None else None
        report = NodeReport(
            name=node.name, type=node.type.value, agent_url=pin.url if pin else "not pinned",
            address=node.address, public_address=node.public_address,
            port_range=f"{node.port_range().first}-{node.port_range().last}",
        )
        if host is None:
            report.problem = no_host
            return report
        try:
            client = pinned_client(host, node.name, env, timeout=timeout, cap=timeout)
        except SdpError as e:
            report.problem = str(e)
            return report
        try:
            _ask(client, report, credentials, no_credentials, state.nodes.model.installation)
        except SdpError as e:
            report.problem = str(e)
        finally:
            client.close()
        report.problem = SECRETS(report.problem) if report.problem else None
        for repository in report.repositories:
            repository.problem = SECRETS(repository.problem) if repository.problem else None
        return report

    with ThreadPoolExecutor(max_workers=max(1, len(nodes)),
                            thread_name_prefix="sdp-page-nodes") as pool:
        return list(pool.map(one, nodes))


def _ask(client: NodeClient, report: NodeReport, credentials: Credentials | None,
         no_credentials: str | None, installation: str) -> None:
    observation = client.observe()
    report.reachable = True
    report.version = observation.node.version
    report.installation = observation.node.installation
    if observation.node.installation != installation:
        report.problem = (f"the agent belongs to installation {observation.node.installation!r},"
                          f" not {installation!r}")
    for container in sorted(observation.containers, key=lambda c: c.name):
        labels = container.labels
        report.containers.append(ContainerLine(
            name=container.name, state=container.state, status=container.status,
            sandbox=labels.get(LABEL_SANDBOX), service=labels.get(LABEL_SERVICE),
            commit=labels.get(LABEL_COMMIT), port=labels.get(LABEL_PORT), aside=container.aside,
        ))
    report.ports_in_use = sorted({int(c.port) for c in report.containers
                                  if c.port and c.port.isdigit()})
    report.networks = sorted(n.name for n in observation.networks)
    report.conflicts = list(observation.conflicts)
    repositories = client.repositories()

    def branches(name: str) -> tuple[dict[str, str] | None, str | None]:
        if credentials is None:
            return None, no_credentials
        try:
            return client.branches(name, credentials), None
        except SdpError as e:
            return None, str(e)

    with ThreadPoolExecutor(max_workers=max(1, len(repositories)),
                            thread_name_prefix="sdp-page-branches") as pool:
        listed = list(pool.map(branches, [r.name for r in repositories]))
    for repository, (heads, problem) in zip(repositories, listed, strict=True):
        report.repositories.append(RepositoryLine(
            name=repository.name, kind=repository.kind.value, image=repository.image,
            branches=dict(sorted(heads.items())) if heads is not None else None,
            problem=problem,
        ))
