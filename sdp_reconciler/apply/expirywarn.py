"""Expiry warnings go out once per expiry: the history remembers which were sent.

An expiry is (sandbox, moment it expires). Activity on the sandbox (a commit touching its file,
a deploy) moves the moment, so a sandbox kept alive and idle again is warned again before its
new expiry; a pass that finds a warning already claimed in the history (by itself or by another
reconciler sharing the store) sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sdp_reconciler.apply.notify import Notice
from sdp_reconciler.history import History
from sdp_reconciler.planner.expiry import ExpiryWarning
from sdp_reconciler.state.models import NotificationEvent

Report = Callable[[str], None]


def notice(warning: ExpiryWarning) -> Notice:
    return Notice(
        NotificationEvent.SANDBOX_EXPIRING, warning.sandbox, warning.message,
        {"expires_at": warning.expires_at.isoformat(timespec="seconds"),
         "file": warning.file, "keep": warning.keep},
    )


def due_notices(warnings: Iterable[ExpiryWarning], history: History,
                report: Report = lambda _m: None) -> list[Notice]:
    """The notices of the warnings not sent before, each claimed in the history now."""
    out = []
    for warning in warnings:
        if history.claim_expiry_warning(warning.sandbox, warning.expires_at):
            report(warning.message)
            out.append(notice(warning))
    return out


__all__ = ["due_notices", "notice"]
