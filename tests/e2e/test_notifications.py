"""Deployment notifications reach webhooks (a local receiver stands in for Slack/Teams)."""

from __future__ import annotations

from tests.e2e.stack import Stack, sandbox_yaml
from tests.node.test_credentials import find_canary
from tests.support.agents import free_port
from tests.support.webhook import WebhookReceiver

NOTIFICATIONS = """\
notifications:
  - name: qa-json
    webhook: {env: SDP_SECRET_TEST_WEBHOOK}
  - name: qa-slack
    webhook: {env: SDP_SECRET_TEST_SLACK}
    format: slack
    events: [DEPLOYMENT_FAILED]
    sandboxes: ["QA-*"]
  - name: down
    webhook: {env: SDP_SECRET_TEST_DOWN}
"""


def test_deployments_are_announced_and_a_dead_webhook_fails_nothing(stack: Stack) -> None:
    stack.write("notifications.yaml", NOTIFICATIONS)
    stack.write("sandboxes/QA-N.yaml", sandbox_yaml("QA-N", account_branch="main"))
    with WebhookReceiver() as hook, WebhookReceiver() as slack:
        env = {"SDP_SECRET_TEST_WEBHOOK": hook.url, "SDP_SECRET_TEST_SLACK": slack.url,
               "SDP_SECRET_TEST_DOWN": f"http://127.0.0.1:{free_port()}/nobody-listens"}
        first = stack.reconcile("once", env=env)
        assert first.code == 0, first.output
        assert "notification down: DEPLOYMENT_STARTED not delivered" in first.stderr
        assert "127.0.0.1" not in first.stderr.split("notification down")[1].splitlines()[0]
        events = [body["event"] for _, body in hook.received]
        assert events == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCEEDED"]
        succeeded = hook.received[1][1]
        assert succeeded["sandbox"] == "QA-N"
        assert succeeded["gateway_url"].startswith("http://127.0.0.1:")
        assert succeeded["services"]["account"]["ok"] is True
        assert slack.received == []  # it only wants failures

        stack.push_service("account", "main", "account broken", compile_error=True)
        failed = stack.reconcile("once", env=env)
        assert failed.code == 2
        assert hook.received[-1][1]["event"] == "DEPLOYMENT_FAILED"
        assert "go build of account failed" in hook.received[-1][1]["text"]
        ((_, message),) = slack.received
        assert set(message) == {"text"} and "Deployment failed in sandbox QA-N" in \
            message["text"]
        for _, body in hook.received + slack.received:
            assert find_canary(repr(body).encode()) == []
