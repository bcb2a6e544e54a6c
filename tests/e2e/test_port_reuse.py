"""A port freed by a removal is used by a new sandbox in the same pass.

Real agents and engine. The GATEWAY node's range is two ports wide: sandboxes KEEP and OLD
hold them; one commit deletes OLD and adds NEW. The pass removes OLD's gateway, the node
confirms it, and a second round of the same ``--once`` deploys NEW's gateway on the freed port
(before, NEW waited for the next pass with "no free port left").
"""

from __future__ import annotations

from ruamel.yaml import YAML

from sdp_testbed.waiting import http_get
from tests.e2e.stack import Stack, sandbox_yaml
from tests.support.ports import port_block
from tests.support.statedirs import NodeEntry, write_nodes


def test_a_port_freed_by_a_removal_is_reused_in_the_same_pass(stack: Stack) -> None:
    first_port, port = port_block(2)
    stack.env.update(write_nodes(stack.state, installation=stack.installation, nodes=[
        NodeEntry(stack.micro, "MICRO", port_block(10), token_env="SDP_TEST_MICRO_TOKEN"),
        NodeEntry(stack.gateway, "GATEWAY", (first_port, port), token_env="SDP_TEST_GATEWAY_TOKEN"),
    ]))
    stack.write("sandboxes/KEEP.yaml", sandbox_yaml("KEEP", account_branch=None))
    stack.write("sandboxes/OLD.yaml", sandbox_yaml("OLD", account_branch=None))
    stack.commit_state("two sandboxes: the gateway range is full")
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    assert f"OLD: point the app at http://127.0.0.1:{port}" in first.stdout

    stack.delete("sandboxes/OLD.yaml")
    stack.write("sandboxes/NEW.yaml", sandbox_yaml("NEW", account_branch=None))
    stack.commit_state("OLD goes, NEW comes")
    second = stack.reconcile("once")
    assert second.code == 0, second.output
    assert "ports freed by removals" in second.output
    assert f"NEW: point the app at http://127.0.0.1:{port}" in second.stdout
    held = YAML(typ="safe").load((stack.state / "ports.yaml").read_text())["allocations"]
    assert [(a["sandbox"], a["service"], a["port"]) for a in held] == [
        ("KEEP", "gateway", first_port), ("NEW", "gateway", port)]
    assert http_get(f"http://127.0.0.1:{port}/erangel/healthz").status == 200

    third = stack.reconcile("once")
    assert third.code == 0 and "No changes" in third.output, third.output
