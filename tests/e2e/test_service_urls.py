"""Services of a sandbox call each other through the ``<SERVICE>_URL`` variables SDP injects.

Real agents, engine, git server, Go and PHP. ``account`` (built with the fixture's
``/call/<NAME>/...`` handler) calls ``payment`` deployed in the same sandbox (Docker DNS on
the sandbox network) and ``user`` on OCP (the stand-in, at the value the gateway's commit
carries); switching ``payment`` to OCP changes ``PAYMENT_URL``, and ``plan`` says so.
"""

from __future__ import annotations

import re
from typing import Any

from sdp_testbed.waiting import http_get
from tests.e2e.stack import Stack

SANDBOX = """\
sandbox: QA-URLS
extends: QA-DEFAULT
services:
  account:
    branch: feature/calls
  payment:
    branch: {payment}
"""


def call(gateway: str, name: str) -> dict[str, Any]:
    answer = http_get(f"{gateway}/erangel/account/call/{name}/ping")
    assert answer.status == 200, answer.text
    body = answer.json()["body"]
    assert "error" not in body, body
    return dict(body)


def test_a_service_reaches_the_others_through_its_service_url_variables(stack: Stack) -> None:
    stack.push_service("account", "feature/calls", "account calls 1", calls=True)
    stack.write("sandboxes/QA-URLS.yaml", SANDBOX.format(payment="main"))
    stack.commit_state("a sandbox whose account calls payment and user")
    first = stack.reconcile("once")
    assert first.code == 0, first.output
    gateway = dict(re.findall(r"^(\S+): point the app at (\S+)$", first.stdout, re.M))["QA-URLS"]

    in_sandbox = call(gateway, "PAYMENT")
    assert in_sandbox["url"] == "http://payment:8080"
    assert in_sandbox["answer"]["service"] == "payment"
    assert in_sandbox["answer"]["revision"] == "payment main"
    assert in_sandbox["answer"]["env"] == {"SDP_SANDBOX": "QA-URLS"}

    on_ocp = call(gateway, "USER")
    assert on_ocp["url"] == stack.ocp["user"].url_for_containers
    assert on_ocp["answer"] == {"backend": "ocp", "service": "ocp-user", "path": "/ping"}

    # The route changes: the variable follows, and plan names it as a spec change.
    stack.write("sandboxes/QA-URLS.yaml", SANDBOX.replace(
        "    branch: {payment}\n", "    use_ocp: true\n"))
    stack.commit_state("payment back to OCP")
    pending = stack.reconcile("plan")
    assert pending.code == 2, pending.output
    assert "spec changed: env PAYMENT_URL" in pending.stdout, pending.stdout
    second = stack.reconcile("once")
    assert second.code == 0, second.output
    moved = call(gateway, "PAYMENT")
    assert moved["url"] == stack.ocp["payment"].url_for_containers
    assert moved["answer"]["service"] == "ocp-payment"
