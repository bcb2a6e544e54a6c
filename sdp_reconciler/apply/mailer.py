"""Notices by e-mail: one message with a plain-text and an HTML part, sent over SMTP.

The connection is upgraded with STARTTLS (the server's certificate is verified against the
reconciler host's trust store; ``SSL_CERT_FILE`` adds a CA) before any login; credentials are
``Secret`` values resolved from references and are never part of a message, a log line or an
exception text that leaves this module (SMTP errors are reported by class and code only).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html import escape
from typing import Any

from msgspec import Struct

from sdp_node.protocol import Secret
from sdp_reconciler.state.models import Email, NotificationEvent

TITLES = {
    NotificationEvent.DEPLOYMENT_STARTED: "Deployment started",
    NotificationEvent.DEPLOYMENT_SUCCEEDED: "Deployment succeeded",
    NotificationEvent.DEPLOYMENT_FAILED: "Deployment failed",
    NotificationEvent.SANDBOX_EXPIRING: "Sandbox expires soon",
    NotificationEvent.SANDBOX_EXPIRED: "Sandbox expired",
}


class MailNotice(Struct, frozen=True):
    event: NotificationEvent
    sandbox: str
    text: str
    fields: Mapping[str, Any]


def title(event: NotificationEvent) -> str:
    return TITLES.get(event, event.value.replace("_", " ").capitalize())


def subject(notice: MailNotice) -> str:
    return f"[SDP] {title(notice.event)}: {notice.sandbox}"


def message(notice: MailNotice, email: Email) -> EmailMessage:
    """The message for ``notice``: plain text first, then the same as HTML."""
    mail = EmailMessage()
    mail["Subject"] = subject(notice)
    mail["From"] = email.sender
    mail["To"] = ", ".join(email.to)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = make_msgid(domain=email.sender.rpartition("@")[2])
    rows = _rows(notice)
    plain = notice.text + "\n"
    if rows:
        plain += "\n" + "\n".join(f"{k}: {v}" for k, v in rows) + "\n"
    plain += "\n-- \nSDP, the Sandbox Deployment Platform\n"
    mail.set_content(plain)
    table = "".join(f"<tr><th align=\"left\">{escape(k)}</th><td>{escape(v)}</td></tr>"
                    for k, v in rows)
    html = (
        "<!doctype html><html><body>"
        f"<h2>{escape(title(notice.event))}: {escape(notice.sandbox)}</h2>"
        + "".join(f"<p>{escape(line)}</p>" for line in notice.text.splitlines() if line)
        + (f"<table>{table}</table>" if rows else "")
        + "<p><small>SDP, the Sandbox Deployment Platform</small></p></body></html>"
    )
    mail.add_alternative(html, subtype="html")
    return mail


def _rows(notice: MailNotice) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    fields = notice.fields
    if fields.get("gateway_url"):
        rows.append(("Gateway", str(fields["gateway_url"])))
    for service, info in sorted((fields.get("services") or {}).items()):
        commit = str(info.get("commit") or "")[:7]
        state = "ok" if info.get("ok") else "failed"
        rows.append((str(service), f"{info.get('branch')} {commit} {state}".strip()))
    if fields.get("expires_at"):
        rows.append(("Expires at", str(fields["expires_at"])))
    if fields.get("keep"):
        rows.append(("To keep it", str(fields["keep"])))
    return rows


class MailError(Exception):
    """Why a message was not sent, in words that carry no credential."""


def send(mail: EmailMessage, email: Email, *, username: Secret | None,
         password: Secret | None, timeout: float) -> None:
    try:
        with smtplib.SMTP(email.host, email.port, timeout=timeout) as smtp:
            smtp.ehlo()
            if email.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if username is not None and password is not None:
                smtp.login(username.reveal(), password.reveal())
            smtp.send_message(mail)
    except smtplib.SMTPResponseException as e:
        raise MailError(f"{type(e).__name__} (SMTP {e.smtp_code})") from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
        raise MailError(type(e).__name__) from None


__all__ = ["MailError", "MailNotice", "message", "send", "subject", "title"]
