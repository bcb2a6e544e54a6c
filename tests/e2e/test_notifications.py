"""Deployment notifications reach webhooks (a local receiver stands in for Slack/Teams)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.e2e.stack import Stack, sandbox_yaml
from tests.node.test_credentials import find_canary
from tests.support.agents import free_port
from tests.support.smtp import SmtpReceiver
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


EXPIRING = """\
notifications:
  - name: qa-json
    webhook: {env: SDP_SECRET_TEST_WEBHOOK}
    events: [SANDBOX_EXPIRING]
  - name: qa-mail
    email:
      host: 127.0.0.1
      port: %d
      sender: sdp@example.invalid
      to: [qa@example.invalid]
      username: {env: SDP_SECRET_TEST_SMTP_USER}
      password: {env: SDP_SECRET_TEST_SMTP_PASSWORD}
"""


def test_an_expiry_warning_arrives_once_by_webhook_and_mail(stack: Stack, tmp_path: Path) -> None:
    stack.write("sandboxes/QA-E.yaml", sandbox_yaml("QA-E", account_branch="main"))
    stack.commit_state("a sandbox")
    assert stack.reconcile("once").code == 0
    # Its file was last changed 20 hours ago and it expires after a day: due in 4 hours. A
    # history of its own, so that the deploy just made is not the sandbox's last activity.
    last = (datetime.now(UTC) - timedelta(hours=20)).isoformat(timespec="seconds")
    stack.write("sandboxes/QA-E.yaml", sandbox_yaml(
        "QA-E", account_branch="main",
        extra="lifecycle:\n  expire_after: 1d\n  warn_before: 6h\n"))
    stack.commit_state("it expires a day after its last activity", date=last)
    history = tmp_path / "other-history.sqlite"
    with WebhookReceiver() as hook, SmtpReceiver(tmp_path) as smtp:
        stack.write("notifications.yaml", EXPIRING % smtp.port)
        env = {"SDP_SECRET_TEST_WEBHOOK": hook.url, "SSL_CERT_FILE": str(smtp.ca_file),
               "SDP_SECRET_TEST_SMTP_USER": smtp.username,
               "SDP_SECRET_TEST_SMTP_PASSWORD": smtp.password}
        first = stack.reconcile("once", env=env, history=history)
        assert first.code == 0, first.output
        assert "Sandbox QA-E expires on" in first.stderr
        ((_, warning),) = hook.received
        assert warning["event"] == "SANDBOX_EXPIRING" and warning["sandbox"] == "QA-E"
        assert warning["file"] == "sandboxes/QA-E.yaml"
        assert "To keep it, touch its file: commit any change to sandboxes/QA-E.yaml" \
            in warning["text"]
        (mail,) = smtp.messages
        assert mail["Subject"] == "[SDP] Sandbox expires soon: QA-E"
        assert "commit any change to sandboxes/QA-E.yaml" in mail.get_body(
            ("plain",)).get_content()  # type: ignore[union-attr]
        again = stack.reconcile("once", env=env, history=history)
        assert again.code == 0, again.output
        assert len(hook.received) == 1 and len(smtp.raw) == 1  # once per expiry
        for raw in smtp.raw:
            assert smtp.password.encode() not in raw
            assert find_canary(raw) == []
