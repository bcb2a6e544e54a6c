"""Trust boundaries of the reconciler, end to end: agents are the host's, not the state's.

* A state commit that points a node at another host is refused before any request.
* A host that took over a pinned agent's address gets an identity check and nothing else:
  no bearer token, no git username or password.
* A container's hostile log line reaches the operator's terminal without its escapes.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdp_node.protocol import IdentityProof
from tests.conftest import CANARY_PASSWORD, CANARY_USER
from tests.e2e.stack import Stack, sandbox_yaml
from tests.support.recorder import RequestRecorder

ESCAPES = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\x1b]0;pwned\x07"


def _secrets(stack: Stack) -> list[str]:
    return [stack.micro.token, stack.gateway.token, CANARY_PASSWORD, CANARY_USER,
            stack.env["SDP_SPEC_HASH_KEY"]]


def test_a_state_commit_cannot_send_an_agent_elsewhere(stack: Stack) -> None:
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    with RequestRecorder() as impostor:
        nodes = (stack.state / "nodes.yaml").read_text()
        stack.write("nodes.yaml", nodes.replace(stack.micro.url, impostor.url))
        planned = stack.reconcile("plan")
        once = stack.reconcile("once")
        received = impostor.received
    assert planned.code == 1 and once.code == 1
    assert "differs from the URL pinned for node 'micro-1'" in planned.stderr
    assert received == []


def test_an_impostor_at_a_pinned_address_gets_no_credential(stack: Stack,
                                                            tmp_path: Path) -> None:
    stack.write("sandboxes/QA-MAIN.yaml", sandbox_yaml("QA-MAIN", account_branch="main"))
    config = Path(stack.env["SDP_RECONCILER_CONFIG"])
    # It knows everything public about the node and answers the check with a made-up proof.
    forged = IdentityProof(node=stack.micro.client().info(), proof="0" * 64)
    with RequestRecorder(body=forged.model_dump_json().encode()) as impostor:
        document = json.loads(config.read_text())
        document["agents"]["micro-1"]["url"] = impostor.url
        taken = tmp_path / "taken-over.yaml"
        taken.write_text(json.dumps(document))
        nodes = (stack.state / "nodes.yaml").read_text()
        stack.write("nodes.yaml", nodes.replace(stack.micro.url, impostor.url))
        once = stack.reconcile("once", env={"SDP_RECONCILER_CONFIG": str(taken)})
        received = impostor.received
    assert once.code == 2, once.output
    assert "could not prove it holds node micro-1's token" in once.output
    assert [(r.method, r.path) for r in received] == [("POST", "/v1/identify")]
    for request in received:
        assert "authorization" not in {k.lower() for k in request.headers}
        assert [s for s in _secrets(stack) if s in request.text()] == []


def test_a_hostile_log_line_reaches_the_terminal_without_its_escapes(stack: Stack) -> None:
    stack.push_service("account", "main", f"account main {ESCAPES}evil")
    stack.write("sandboxes/QA-LOG.yaml", sandbox_yaml("QA-LOG", account_branch="main"))
    assert stack.reconcile("once").code == 0
    logs = stack.reconcile("logs", "QA-LOG", "account")
    assert logs.code == 0, logs.output
    assert "account main evil listening on :8080" in logs.stdout
    assert "\x1b" not in logs.stdout and "\x07" not in logs.stdout
