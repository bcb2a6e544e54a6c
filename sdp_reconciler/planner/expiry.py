"""Sandbox expiry: after ``expire_after`` without activity a sandbox is stopped (kept, like
suspended); after ``retention`` more, its containers are removed (the file stays: touching it
brings the sandbox back). Pure: the caller says when the sandbox last saw activity.

A warning (``SANDBOX_EXPIRING``) goes out ``warn_before`` ahead of the expiry, naming the
moment and how to keep the sandbox; ``expirywarn.py`` sends it once per expiry.

Activity is the later of the last commit that touched the sandbox's state file (its modification
time when it has uncommitted edits or no git) and its last successful deploy in the history.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from msgspec import Struct
from msgspec.structs import replace

from sdp_reconciler.state.models import duration_seconds
from sdp_reconciler.state.resolved import ResolvedSandbox


class Expiry(Struct, frozen=True):
    expired: bool
    retired: bool
    message: str


def expiry_of(sandbox: ResolvedSandbox, last_activity: datetime | None,
              now: datetime) -> Expiry:
    lifecycle = sandbox.lifecycle
    if lifecycle.expire_after is None or last_activity is None:
        return Expiry(False, False, "")
    idle = now - last_activity
    expire_after = timedelta(seconds=duration_seconds(lifecycle.expire_after))
    if idle < expire_after:
        return Expiry(False, False, "")
    message = f"sandbox expired: no activity for {lifecycle.expire_after} " \
              f"(last on {last_activity:%Y-%m-%d %H:%M} UTC)"
    if lifecycle.retention is not None:
        retention = timedelta(seconds=duration_seconds(lifecycle.retention))
        if idle >= expire_after + retention:
            return Expiry(True, True, f"{message}; its retention of {lifecycle.retention} is "
                          "over (touch the sandbox's file to bring it back)")
    return Expiry(True, False, message)


class ExpiryWarning(Struct, frozen=True):
    sandbox: str
    file: str
    expires_at: datetime
    message: str
    keep: str
    """how to keep the sandbox"""


def expiry_warning(sandbox: ResolvedSandbox, last_activity: datetime | None,
                   now: datetime, file: str | None = None) -> ExpiryWarning | None:
    """The warning due for ``sandbox`` now, or None (not due, already expired, no expiry).
    ``file``: the sandbox's file as its owners know it (its path in the state repository)."""
    file = file or sandbox.file
    lifecycle = sandbox.lifecycle
    if lifecycle.expire_after is None or lifecycle.warn_before is None or last_activity is None:
        return None
    expires_at = last_activity + timedelta(seconds=duration_seconds(lifecycle.expire_after))
    warn_from = expires_at - timedelta(seconds=duration_seconds(lifecycle.warn_before))
    if not warn_from <= now < expires_at:
        return None
    keep = f"touch its file: commit any change to {file} (or deploy it)"
    message = (
        f"Sandbox {sandbox.name} expires on {expires_at:%Y-%m-%d %H:%M} UTC: no activity for "
        f"{lifecycle.expire_after} since {last_activity:%Y-%m-%d %H:%M} UTC; its containers "
        f"will then be stopped. To keep it, {keep}."
    )
    return ExpiryWarning(sandbox.name, file, expires_at, message, keep)


def expiry_warnings(sandboxes: dict[str, ResolvedSandbox], activity: dict[str, datetime],
                    now: datetime, files: dict[str, str] | None = None) -> list[ExpiryWarning]:
    found = (expiry_warning(s, activity.get(n), now, (files or {}).get(n))
             for n, s in sorted(sandboxes.items()))
    return [w for w in found if w is not None]


def apply_expiry(
    sandboxes: dict[str, ResolvedSandbox], activity: dict[str, datetime], now: datetime
) -> tuple[dict[str, ResolvedSandbox], dict[str, str]]:
    """The sandboxes to plan (expired ones suspended) and the retired ones with why."""
    desired: dict[str, ResolvedSandbox] = {}
    retired: dict[str, str] = {}
    for name, sandbox in sandboxes.items():
        expiry = expiry_of(sandbox, activity.get(name), now)
        if expiry.retired:
            retired[name] = expiry.message
        elif expiry.expired:
            desired[name] = replace(sandbox, suspended_because=expiry.message)
        else:
            desired[name] = sandbox
    return desired, retired
