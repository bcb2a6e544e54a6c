"""Three MICRO agents on one engine, with different node names: new services spread over them,
a second pass moves nothing, a cordoned node gets nothing new (and keeps what it runs), a
gateway reaches a service on another node through that node's address, and ``drain`` empties a
node under load (a GET every 30 ms through two gateways) without one failed request."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import docker

from sdp_node.protocol import LABEL_NODE
from sdp_testbed.load import LoadLoop
from tests.e2e.stack import Stack, sandbox_yaml
from tests.e2e.test_mvp import gateway_urls, through
from tests.support.agents import AgentProcess
from tests.support.names import PREFIX
from tests.support.ports import port_block
from tests.support.statedirs import NodeEntry, write_nodes


def account_nodes(client: docker.DockerClient, installation: str) -> dict[str, str]:
    """Sandbox account container (its plan name) -> the node label it carries."""
    found = {}
    for c in client.containers.list(filters={"label": f"sdp.instance={installation}"}):
        node = c.labels[LABEL_NODE]
        name = c.name.removesuffix(f".{node}")  # an agent on a shared engine qualifies it
        if name.endswith("-account"):
            found[name] = node
    return found


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


def test_drain_moves_a_nodes_services_without_a_failed_request_and_keeps_it_empty(
        stack: Stack, make_agent: Callable[..., AgentProcess],
        docker_client: docker.DockerClient) -> None:
    # A move runs the sandbox's container on two nodes at once: on one engine their names
    # would collide, so these agents qualify their engine names (``shared_engine``).
    config = json.loads(stack.micro.config_path.read_text())
    stack.micro.stop()
    stack.micro.config_path.write_text(json.dumps({**config, "shared_engine": True}))
    stack.micro.start()
    repositories: list[dict[str, Any]] = config["repositories"]
    others = [make_agent(name=f"micro-{n}", repositories=repositories, shared_engine=True)
              for n in (2, 3)]
    blocks = {"micro-1": port_block(100), "micro-2": port_block(100),
              "micro-3": port_block(100)}
    stack.env.update(write_nodes(stack.state, installation=stack.installation, nodes=[
        NodeEntry(stack.micro, "MICRO", blocks["micro-1"], token_env="SDP_TEST_MICRO_TOKEN"),
        *(NodeEntry(agent, "MICRO", blocks[agent.name]) for agent in others),
        NodeEntry(stack.gateway, "GATEWAY", port_block(100), token_env="SDP_TEST_GATEWAY_TOKEN"),
    ]))
    for n in (1, 2, 3, 4):
        stack.write(f"sandboxes/QA-N{n}.yaml", sandbox_yaml(f"QA-N{n}", account_branch="main"))
    stack.commit_state("four sandboxes over three nodes")
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    placed = account_nodes(docker_client, stack.installation)
    on_one = sorted(c for c, n in placed.items() if n == "micro-1")
    assert len(on_one) == 2, placed  # QA-N1 and QA-N4 (the fewest containers, then the name)
    urls = gateway_urls(first.output)
    nodes_yaml = stack.state / "nodes.yaml"
    before = nodes_yaml.read_bytes()

    # Bad input: a clear error, nothing changes.
    for node, expected in (("micro-9", "no node 'micro-9'"),
                           ("gateway-1", "only a MICRO node can be drained")):
        refused = stack.reconcile("drain", node)
        assert refused.code == 1 and expected in refused.stderr, refused.output
        assert nodes_yaml.read_bytes() == before
    # No other node has room (each holds its one container): refused, naming why.
    document = json.loads(before)
    for entry in document["nodes"]:
        if entry["name"] in ("micro-2", "micro-3"):
            entry["capacity"] = {"containers": 1}
    full = (json.dumps(document, indent=1) + "\n").encode()
    nodes_yaml.write_bytes(full)
    refused = stack.reconcile("drain", "micro-1")
    assert refused.code == 1 and "has room" in refused.stderr, refused.output
    assert "Nothing changed" in refused.stderr, refused.output
    assert nodes_yaml.read_bytes() == full
    assert account_nodes(docker_client, stack.installation) == placed
    nodes_yaml.write_bytes(before)
    dry = stack.reconcile("drain", "micro-1", "--dry-run")
    assert dry.code == 0 and "moved from node micro-1 (node micro-1 is drained)" in dry.output, \
        dry.output
    assert nodes_yaml.read_bytes() == before
    assert account_nodes(docker_client, stack.installation) == placed

    moving = [c.removeprefix(f"{PREFIX}-").removesuffix("-account").upper() for c in on_one]
    loads = {name: LoadLoop(f"{urls[name]}/erangel/account/x", interval=0.03)
             for name in moving}
    with contextlib.ExitStack() as running:
        for load in loads.values():
            running.enter_context(load)
            load.wait_for_answers(10)
        drained = stack.reconcile("drain", "micro-1")
        assert drained.code == 0, drained.output
        assert "node micro-1 drained" in drained.stdout, drained.output
        for load in loads.values():
            load.wait_for_answers(10)  # answers after the old containers went
    for name, load in loads.items():
        assert load.failures() == [], (name, load.failures()[:3])
        assert len(load.answers) > 20, (name, len(load.answers))

    after = account_nodes(docker_client, stack.installation)
    assert not [c for c, n in after.items() if n == "micro-1"], after
    on_micro_one = docker_client.containers.list(all=True, filters={"label": [
        f"sdp.instance={stack.installation}", "sdp.node=micro-1"]})
    assert on_micro_one == [], [c.name for c in on_micro_one]
    assert {c: n for c, n in after.items() if c not in on_one} == \
        {c: n for c, n in placed.items() if c not in on_one}, "nothing else moved"
    assert "drained: true" in nodes_yaml.read_text() or '"drained": true' in \
        nodes_yaml.read_text()
    for name in ("QA-N1", "QA-N2", "QA-N3", "QA-N4"):
        answer = through(urls[name], "account")
        assert answer["body"]["revision"] == "account main", answer
        port = int(answer["upstream"].rsplit(":", 1)[1].split("/", 1)[0])
        assert not blocks["micro-1"][0] <= port <= blocks["micro-1"][1], (name, answer)

    again = stack.reconcile("once")
    assert again.code == 0, again.output
    assert "No changes" in again.stderr, again.output

    # --undo takes the mark off; nothing moves back on its own.
    undone = stack.reconcile("drain", "micro-1", "--undo")
    assert undone.code == 0 and "drained" not in nodes_yaml.read_text(), undone.output
    still = stack.reconcile("once")
    assert still.code == 0 and "No changes" in still.stderr, still.output
    # An unreachable node cannot be drained: its containers could not be retired.
    others[1].stop()
    held = nodes_yaml.read_bytes()
    unreachable = stack.reconcile("drain", "micro-3")
    assert unreachable.code == 1, unreachable.output
    assert "node micro-3 is unreachable" in unreachable.stderr, unreachable.output
    assert nodes_yaml.read_bytes() == held
