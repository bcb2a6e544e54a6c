"""E-mail notices reach a real SMTP server on 127.0.0.1 over STARTTLS, and no secret travels.

The server (aiosmtpd, ``tests/support/smtp.py``) has a self-signed certificate made for the
test, refuses mail before STARTTLS and checks a login; the client trusts the certificate only
through ``SSL_CERT_FILE`` (the host's trust store), as an installation would add its CA.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdp_reconciler.apply.notify import Notice, Notifier
from sdp_reconciler.state.models import Notification
from sdp_reconciler.state.models import NotificationEvent as E
from tests.support.smtp import SmtpReceiver, self_signed


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpReceiver]:
    with SmtpReceiver(tmp_path, password="smtp-" + secrets.token_hex(12)) as server:
        yield server


def notification(smtp: SmtpReceiver, **extra: object) -> Notification:
    return Notification.model_validate({
        "name": "qa-mail",
        "email": {"host": "127.0.0.1", "port": smtp.port, "sender": "sdp@example.invalid",
                  "to": ["qa@example.invalid", "lead@example.invalid"],
                  "username": {"env": "SDP_SECRET_SMTP_USER"},
                  "password": {"env": "SDP_SECRET_SMTP_PASSWORD"}},
        **extra,
    })


def notifier(smtp: SmtpReceiver, reports: list[str], *, password: str | None = None,
             **extra: object) -> Notifier:
    env = {"SDP_SECRET_SMTP_USER": smtp.username,
           "SDP_SECRET_SMTP_PASSWORD": password or smtp.password}
    return Notifier([notification(smtp, **extra)], root=Path("/nonexistent"), env=env,
                    redactor=lambda text: text.replace(smtp.password, "***"),
                    report=reports.append)


FAILED = Notice(
    E.DEPLOYMENT_FAILED, "QA-LOGIN-ERROR",
    "Deployment failed in sandbox QA-LOGIN-ERROR: sandbox-qa-login-error-account: go build "
    "of account failed <main.go:3>",
    {"gateway_url": "http://127.0.0.1:8081",
     "services": {"account": {"branch": "feature/login-error", "commit": "c0ffee1" + "0" * 33,
                              "ok": False}}},
)


def test_a_notice_arrives_as_plain_text_and_html_over_starttls(
    smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_file))
    reports: list[str] = []
    sender = notifier(smtp, reports)
    sender.send([FAILED])
    sender.close()
    assert reports == []
    assert sender.delivered == [("qa-mail", "DEPLOYMENT_FAILED")]
    (mail,) = smtp.messages
    assert mail["Subject"] == "[SDP] Deployment failed: QA-LOGIN-ERROR"
    assert mail["From"] == "sdp@example.invalid"
    assert mail["To"] == "qa@example.invalid, lead@example.invalid"
    plain = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert FAILED.text in text
    assert "Gateway: http://127.0.0.1:8081" in text
    assert "account: feature/login-error c0ffee1 failed" in text
    markup = html.get_content()
    assert "<h2>Deployment failed: QA-LOGIN-ERROR</h2>" in markup
    assert "go build of account failed &lt;main.go:3&gt;" in markup  # escaped
    assert smtp.logins == [(smtp.username, smtp.password)]
    for raw in smtp.raw:
        assert smtp.password.encode() not in raw


def test_every_event_of_the_other_channels_is_mailed_and_filters_apply(
    smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_file))
    sender = notifier(smtp, [], sandboxes=["QA-*"])
    sender.send([Notice(event, "QA-X", f"{event.value} text") for event in E]
                + [Notice(E.DEPLOYMENT_STARTED, "DEV-Y", "not wanted")])
    sender.close()
    subjects = sorted(str(m["Subject"]) for m in smtp.messages)
    assert subjects == sorted(
        f"[SDP] {title}: QA-X" for title in ("Deployment started", "Deployment succeeded",
                                              "Deployment failed", "Sandbox expired",
                                              "Sandbox expires soon"))


def test_a_wrong_password_is_reported_without_any_secret(
    smtp: SmtpReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp.ca_file))
    canary = "canary-" + secrets.token_hex(12)
    reports: list[str] = []
    sender = notifier(smtp, reports, password=canary)
    sender.send([FAILED])
    sender.close()
    assert sender.delivered == [] and smtp.raw == []
    assert set(smtp.logins) == {(smtp.username, canary)}  # it was tried, over TLS
    assert reports == ["notification qa-mail: DEPLOYMENT_FAILED not delivered: "
                       "SMTPAuthenticationError (SMTP 535)"]


def test_an_untrusted_certificate_stops_the_mail_before_the_login(
    smtp: SmtpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed(other)[0]))  # trusts another cert
    reports: list[str] = []
    sender = notifier(smtp, reports)
    sender.send([FAILED])
    sender.close()
    assert sender.delivered == [] and smtp.logins == [] and smtp.raw == []
    assert reports == ["notification qa-mail: DEPLOYMENT_FAILED not delivered: "
                       "SSLCertVerificationError"]


def test_an_unreadable_login_reference_is_reported_and_nothing_is_sent(
    smtp: SmtpReceiver,
) -> None:
    reports: list[str] = []
    sender = Notifier([notification(smtp)], root=Path("/nonexistent"), env={},
                      redactor=str, report=reports.append)
    sender.send([FAILED])
    sender.close()
    assert smtp.raw == []
    assert reports == ["notification qa-mail: SMTP login unavailable: environment variable "
                       "SDP_SECRET_SMTP_USER is not set"]
