"""Deployment notifications: incoming webhooks for Slack, Microsoft Teams, or plain JSON, and
e-mail over SMTP with STARTTLS (``mailer.py``).

``notifications.yaml`` names webhooks (their URLs are secret references: such URLs carry a
token) or SMTP servers (their logins are references) and which events and sandboxes each
wants: deployment started, succeeded, failed, and
sandbox expired. Delivery is best-effort and bounded: a webhook that fails or hangs is reported
and never holds up or fails a pass. A notice's text is redacted with the values this pass knows
before it leaves, and a webhook's URL is never printed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from msgspec import Struct, field

from sdp_node.protocol import Secret
from sdp_reconciler.errors import SdpError
from sdp_reconciler.observe import credentials as creds
from sdp_reconciler.planner.plan import Action, Change, Plan
from sdp_reconciler.state.models import Notification, NotificationEvent, WebhookFormat
from sdp_reconciler.state.trust import SecretPolicy

if TYPE_CHECKING:  # httpx loads only for a pass that has a webhook to call (issue 15)
    import httpx

Report = Callable[[str], None]
TIMEOUT_SECONDS = 5.0


class Notice(Struct, frozen=True):
    event: NotificationEvent
    sandbox: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


def payload(notice: Notice, form: WebhookFormat) -> dict[str, Any]:
    if form is WebhookFormat.SLACK:
        return {"text": notice.text}
    if form is WebhookFormat.TEAMS:
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                "summary": notice.text.splitlines()[0], "text": notice.text}
    return {"event": notice.event.value, "sandbox": notice.sandbox, "text": notice.text,
            **notice.fields}


def _describe(change: Change) -> str:
    detail = change.detail
    if detail.commit:
        return (f"{change.service}@{detail.branch} {detail.commit[:7]} "
                f"({change.reason})")
    return f"{change.action.value} {change.resource} ({change.reason})"


def started_notices(plan: Plan) -> list[Notice]:
    out = []
    for sandbox, changes in _by_sandbox(plan.changes).items():
        deploys = [c for c in changes if c.action is not Action.REMOVE and c.service]
        if deploys:
            out.append(Notice(
                NotificationEvent.DEPLOYMENT_STARTED, sandbox,
                f"Deployment started in sandbox {sandbox}: "
                + "; ".join(_describe(c) for c in deploys),
            ))
    return out


def finished_notices(plan: Plan, ok: Callable[[Change], bool],
                     failure: Callable[[Change], str], urls: Mapping[str, str]) -> list[Notice]:
    out = []
    for sandbox, changes in _by_sandbox(plan.changes).items():
        expired = [c for c in changes if c.reason.startswith("sandbox expired")]
        if expired:
            out.append(Notice(NotificationEvent.SANDBOX_EXPIRED, sandbox,
                              f"Sandbox {sandbox} expired: {expired[0].reason}"))
        deploys = [c for c in changes if c.action is not Action.REMOVE and c.service]
        if not deploys:
            continue
        failed = [c for c in deploys if not ok(c)]
        fields = {"gateway_url": urls.get(sandbox),
                  "services": {c.service: {"branch": c.detail.branch,
                                           "commit": c.detail.commit,
                                           "ok": ok(c)} for c in deploys}}
        if failed:
            out.append(Notice(
                NotificationEvent.DEPLOYMENT_FAILED, sandbox,
                f"Deployment failed in sandbox {sandbox}: "
                + "; ".join(f"{c.resource}: {failure(c)}" for c in failed),
                fields,
            ))
        else:
            where = f"; point the app at {urls[sandbox]}" if urls.get(sandbox) else ""
            out.append(Notice(
                NotificationEvent.DEPLOYMENT_SUCCEEDED, sandbox,
                f"Deployment succeeded in sandbox {sandbox}: "
                + ", ".join(f"{c.service}@{c.detail.branch}" for c in deploys) + where,
                fields,
            ))
    return out


def _by_sandbox(changes: Iterable[Change]) -> dict[str, list[Change]]:
    grouped: dict[str, list[Change]] = {}
    for change in changes:
        if change.sandbox:
            grouped.setdefault(change.sandbox, []).append(change)
    return grouped


def _webhook_ok(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(
        c.isspace() for c in url)


def _wants(notification: Notification, notice: Notice) -> bool:
    if notice.event not in notification.events:
        return False
    return not notification.sandboxes or any(
        fnmatch.fnmatchcase(notice.sandbox, p) for p in notification.sandboxes)


class Notifier:
    def __init__(self, notifications: Iterable[Notification], *, root: Path,
                 env: Mapping[str, str] | None, redactor: Callable[[str], str],
                 policy: SecretPolicy | None = None, report: Report = lambda _m: None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.redact = redactor
        self.report = report
        self.targets: list[tuple[Notification, str]] = []
        self.mailboxes: list[tuple[Notification, Secret | None, Secret | None]] = []
        for notification in notifications:
            if notification.email is not None:
                email = notification.email
                try:
                    login = (None, None) if email.username is None or email.password is None \
                        else (creds.resolve(email.username, root, env, policy=policy),
                              creds.resolve(email.password, root, env, policy=policy))
                except SdpError as e:
                    report(f"notification {notification.name}: SMTP login unavailable: {e}")
                    continue
                self.mailboxes.append((notification, *login))
                continue
            assert notification.webhook is not None
            try:
                url = creds.resolve(notification.webhook, root, env, policy=policy).reveal()
            except SdpError as e:
                report(f"notification {notification.name}: webhook unavailable: {e}")
                continue
            if not _webhook_ok(url):
                report(f"notification {notification.name}: the webhook is not an http(s) URL")
                continue
            self.targets.append((notification, url))
        # Only with somewhere to deliver: httpx and a client's TLS context cost tens of ms.
        self._client: httpx.Client | None = None
        if self.targets:
            import httpx

            self._client = httpx.Client(timeout=TIMEOUT_SECONDS, transport=transport)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sdp-notify")
        self._pending: list[Any] = []
        self.delivered: list[tuple[str, str]] = []

    def send(self, notices: Iterable[Notice]) -> None:
        for notice in notices:
            notice = Notice(notice.event, notice.sandbox, self.redact(notice.text),
                            notice.fields)
            for notification, url in self.targets:
                if _wants(notification, notice):
                    self._pending.append(self._pool.submit(self._post, notification, url,
                                                           notice))
            for notification, username, password in self.mailboxes:
                if _wants(notification, notice):
                    self._pending.append(self._pool.submit(
                        self._mail, notification, username, password, notice))

    def _mail(self, notification: Notification, username: Secret | None,
              password: Secret | None, notice: Notice) -> None:
        assert notification.email is not None
        # smtplib and the e-mail stack load only for a pass that sends mail (issue 15)
        from sdp_reconciler.apply import mailer

        mail = mailer.message(
            mailer.MailNotice(notice.event, notice.sandbox, notice.text, notice.fields),
            notification.email)
        try:
            mailer.send(mail, notification.email, username=username, password=password,
                        timeout=TIMEOUT_SECONDS)
        except mailer.MailError as e:
            self.report(self.redact(f"notification {notification.name}: {notice.event.value} "
                                    f"not delivered: {e}"))
            return
        self.delivered.append((notification.name, notice.event.value))

    def _post(self, notification: Notification, url: str, notice: Notice) -> None:
        assert self._client is not None  # there are targets
        import httpx

        try:
            answer = self._client.post(url, json=payload(notice, notification.format))
        except httpx.HTTPError as e:
            self.report(f"notification {notification.name}: {notice.event.value} not "
                        f"delivered: {type(e).__name__}")
            return
        if answer.status_code >= 400:
            self.report(f"notification {notification.name}: {notice.event.value} refused "
                        f"with HTTP {answer.status_code}")
            return
        self.delivered.append((notification.name, notice.event.value))

    def close(self, timeout: float = 2 * TIMEOUT_SECONDS) -> None:
        """Wait (bounded) for deliveries in flight, then let go of the connections."""
        wait(self._pending, timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
