"""``check_installation``: an agent is acted upon only when it is the node, installation and
name space the state expects."""

from __future__ import annotations

import pytest

from sdp_node.protocol import NodeInfo, NodeType, Observation
from sdp_reconciler.observe.observing import check_installation
from sdp_reconciler.planner.world import NodeView
from sdp_reconciler.state.models import Node


def view(*, name: str = "micro-1", installation: str = "demo",
         prefix: str = "sandbox") -> NodeView:
    node = Node(name="micro-1", type="MICRO", agent_url="http://127.0.0.1:3453",
                address="127.0.0.1", public_address="127.0.0.1")
    info = NodeInfo(name=name, type=NodeType.MICRO, installation=installation,
                    resource_prefix=prefix, version="test")
    observation = Observation(node=info, containers=[], networks=[], gateways=[],
                              last_applied={}, operations_in_flight=[])
    return NodeView(node=node, observation=observation)


def test_the_expected_agent_is_kept() -> None:
    checked = check_installation({"micro-1": view()}, "demo", "sandbox")
    assert checked["micro-1"].reachable


@pytest.mark.parametrize(("agent", "expected"), [
    ({"prefix": "t1a2b3c"}, "names its containers t1a2b3c-..., nodes.yaml says resource_prefix "
                            "'sandbox'"),
    ({"installation": "other"}, "belongs to installation 'other', not 'demo'"),
    ({"name": "micro-2"}, "calls itself 'micro-2', not 'micro-1'"),
])
def test_another_agent_is_never_acted_upon(agent: dict[str, str], expected: str) -> None:
    checked = check_installation({"micro-1": view(**agent)}, "demo", "sandbox")["micro-1"]
    assert not checked.reachable
    assert checked.unreachable is not None and expected in checked.unreachable
