"""Sandbox expiry: after ``expire_after`` without activity a sandbox is stopped (kept, like
suspended); after ``retention`` more, its containers are removed (the file stays: touching it
brings the sandbox back). Pure: the caller says when the sandbox last saw activity.

Activity is the later of the last commit that touched the sandbox's state file (its modification
time when it has uncommitted edits or no git) and its last successful deploy in the history.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sdp_reconciler.state.models import duration_seconds
from sdp_reconciler.state.resolved import ResolvedSandbox


@dataclass(frozen=True)
class Expiry:
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
