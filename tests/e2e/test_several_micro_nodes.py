"""Three MICRO agents on one engine, with different node names: new services spread over them,
a second pass moves nothing, a cordoned node gets nothing new (and keeps what it runs), and a
gateway reaches a service on another node through that node's address."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import docker

from sdp_node.protocol import LABEL_NODE
from tests.e2e.stack import Stack, sandbox_yaml
from tests.e2e.test_mvp import gateway_urls, through
from tests.support.agents import AgentProcess
from tests.support.names import PREFIX
from tests.support.ports import port_block
from tests.support.statedirs import NodeEntry, write_nodes


def account_nodes(client: docker.DockerClient, installation: str) -> dict[str, str]:
    """Sandbox account container -> the node label it carries."""
    return {c.name: c.labels[LABEL_NODE] for c in client.containers.list(
        filters={"label": f"sdp.instance={installation}"}) if c.name.endswith("-account")}


def test_three_micro_nodes_spread_stay_put_and_honour_a_cordon(
        stack: Stack, make_agent: Callable[..., AgentProcess],
        docker_client: docker.DockerClient) -> None:
    repositories: list[dict[str, Any]] = json.loads(
        stack.micro.config_path.read_text())["repositories"]
    others = [make_agent(name=f"micro-{n}", repositories=repositories) for n in (2, 3)]
    stack.env.update(write_nodes(stack.state, installation=stack.installation, nodes=[
        NodeEntry(stack.micro, "MICRO", port_block(100), token_env="SDP_TEST_MICRO_TOKEN"),
        *(NodeEntry(agent, "MICRO", port_block(100)) for agent in others),
        NodeEntry(stack.gateway, "GATEWAY", port_block(100), token_env="SDP_TEST_GATEWAY_TOKEN"),
    ]))
    for n in (1, 2, 3):
        stack.write(f"sandboxes/QA-N{n}.yaml", sandbox_yaml(f"QA-N{n}", account_branch="main"))
    stack.commit_state("three sandboxes")
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    placed = account_nodes(docker_client, stack.installation)
    assert placed == {f"{PREFIX}-qa-n{n}-account": f"micro-{n}" for n in (1, 2, 3)}, placed
    # QA-N3's gateway (on gateway-1) reaches its account on micro-3 by that node's address
    url = gateway_urls(first.output)["QA-N3"]
    assert through(url, "account")["body"]["revision"] == "account main"

    again = stack.reconcile("once")
    assert again.code == 0, again.output
    assert "No changes" in again.stderr, again.output

    nodes_yaml = stack.state / "nodes.yaml"
    document = json.loads(nodes_yaml.read_text())
    for entry in document["nodes"]:
        if entry["name"] == "micro-1":
            entry["cordoned"] = True
    nodes_yaml.write_text(json.dumps(document, indent=1) + "\n")
    for n in (4, 5):
        stack.write(f"sandboxes/QA-N{n}.yaml", sandbox_yaml(f"QA-N{n}", account_branch="main"))
    stack.commit_state("micro-1 cordoned; two more sandboxes")
    third = stack.reconcile("once")
    assert third.code == 0, third.output
    placed = account_nodes(docker_client, stack.installation)
    assert placed[f"{PREFIX}-qa-n1-account"] == "micro-1", "a cordon moves nothing"
    assert {placed[f"{PREFIX}-qa-n{n}-account"] for n in (4, 5)} == {"micro-2", "micro-3"}
