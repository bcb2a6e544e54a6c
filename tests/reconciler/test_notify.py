"""Notification payloads and which notices a plan gives (pure parts of notify.py)."""

from __future__ import annotations

from sdp_reconciler.apply.notify import Notice, payload
from sdp_reconciler.state.models import NotificationEvent, WebhookFormat

NOTICE = Notice(NotificationEvent.DEPLOYMENT_FAILED, "QA-X",
                "Deployment failed in sandbox QA-X: go build failed\nsecond line",
                {"gateway_url": "http://127.0.0.1:8080"})


def test_slack_gets_text_only() -> None:
    assert payload(NOTICE, WebhookFormat.SLACK) == {"text": NOTICE.text}


def test_teams_gets_a_message_card_with_a_one_line_summary() -> None:
    card = payload(NOTICE, WebhookFormat.TEAMS)
    assert card["@type"] == "MessageCard"
    assert card["summary"] == "Deployment failed in sandbox QA-X: go build failed"
    assert card["text"] == NOTICE.text


def test_json_carries_the_event_and_fields() -> None:
    body = payload(NOTICE, WebhookFormat.JSON)
    assert body["event"] == "DEPLOYMENT_FAILED" and body["sandbox"] == "QA-X"
    assert body["gateway_url"] == "http://127.0.0.1:8080"
