"""Sandbox expiry as a pure function: active, expired (stopped), retired (removed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sdp_reconciler.planner.expiry import apply_expiry, expiry_of
from sdp_reconciler.state.models import Lifecycle
from sdp_reconciler.state.resolve import ResolvedSandbox
from sdp_reconciler.state.sources import Location

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def sandbox(**lifecycle: str) -> ResolvedSandbox:
    return ResolvedSandbox(
        name="QA-X", file="state/sandboxes/QA-X.yaml", location=Location("x", 1, 1),
        templates=(), gateway=None, services={}, environment=None, resources=None,
        lifecycle=Lifecycle.model_validate(lifecycle),
    )


@pytest.mark.parametrize(
    ("lifecycle", "idle_days", "expired", "retired"),
    [
        ({}, 400, False, False),
        ({"expire_after": "14d"}, 13, False, False),
        ({"expire_after": "14d"}, 14, True, False),
        ({"expire_after": "14d"}, 400, True, False),
        ({"expire_after": "14d", "retention": "7d"}, 20, True, False),
        ({"expire_after": "14d", "retention": "7d"}, 21, True, True),
        ({"expire_after": "2w", "retention": "1d"}, 15, True, True),
    ],
)
def test_expiry_table(lifecycle: dict[str, str], idle_days: int, expired: bool,
                      retired: bool) -> None:
    result = expiry_of(sandbox(**lifecycle), NOW - timedelta(days=idle_days), NOW)
    assert (result.expired, result.retired) == (expired, retired)
    if expired:
        assert "no activity for" in result.message


def test_unknown_activity_never_expires() -> None:
    assert not expiry_of(sandbox(expire_after="1d"), None, NOW).expired


def test_apply_expiry_suspends_expired_and_drops_retired() -> None:
    old = NOW - timedelta(days=30)
    sandboxes = {
        "A": sandbox(expire_after="14d"),
        "B": sandbox(expire_after="14d", retention="7d"),
        "C": sandbox(),
    }
    desired, retired = apply_expiry(sandboxes, {"A": old, "B": old, "C": old}, NOW)
    assert set(desired) == {"A", "C"} and set(retired) == {"B"}
    assert desired["A"].suspended and "sandbox expired" in desired["A"].suspend_reason
    assert not desired["C"].suspended
    assert "retention of 7d is over" in retired["B"]
