"""Sandbox expiry as a pure function: active, expired (stopped), retired (removed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sdp_reconciler.apply.expirywarn import due_notices
from sdp_reconciler.history import History
from sdp_reconciler.planner.expiry import apply_expiry, expiry_of, expiry_warning, expiry_warnings
from sdp_reconciler.state.models import Lifecycle, NotificationEvent
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


# -- warnings before the expiry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifecycle", "idle_hours", "due"),
    [
        ({"expire_after": "14d"}, 14 * 24 - 1, False),                       # no warn_before
        ({"expire_after": "14d", "warn_before": "1d"}, 12 * 24, False),      # too early
        ({"expire_after": "14d", "warn_before": "1d"}, 13 * 24, True),       # the day before
        ({"expire_after": "14d", "warn_before": "1d"}, 14 * 24 - 1, True),
        ({"expire_after": "14d", "warn_before": "1d"}, 14 * 24, False),      # expired already
        ({"warn_before": "1d"}, 400 * 24, False),                            # never expires
        ({"expire_after": "1d", "warn_before": "2d"}, 0, True),              # right away
    ],
)
def test_warning_table(lifecycle: dict[str, str], idle_hours: int, due: bool) -> None:
    warning = expiry_warning(sandbox(**lifecycle), NOW - timedelta(hours=idle_hours), NOW)
    assert (warning is not None) == due


def test_a_warning_names_the_moment_and_how_to_keep_the_sandbox() -> None:
    last = NOW - timedelta(days=13)
    warning = expiry_warning(sandbox(expire_after="14d", warn_before="2d"), last, NOW)
    assert warning is not None
    assert warning.expires_at == last + timedelta(days=14)
    assert warning.message == (
        "Sandbox QA-X expires on 2026-11-30 12:00 UTC: no activity for 14d since "
        "2026-11-16 12:00 UTC; its containers will then be stopped. To keep it, touch its "
        "file: commit any change to state/sandboxes/QA-X.yaml (or deploy it).")
    assert expiry_warnings({"QA-X": sandbox(expire_after="14d", warn_before="2d")},
                           {"QA-X": last}, NOW) == [warning]


def test_each_expiry_is_announced_once_and_a_moved_expiry_again(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    spec = sandbox(expire_after="14d", warn_before="2d")
    first = expiry_warning(spec, NOW - timedelta(days=13), NOW)
    assert first is not None
    said: list[str] = []
    (notice,) = due_notices([first], history, said.append)
    assert notice.event is NotificationEvent.SANDBOX_EXPIRING
    assert notice.fields["file"] == "state/sandboxes/QA-X.yaml"
    assert said == [first.message]
    # the next passes, by this reconciler or another sharing the store: nothing more
    assert due_notices([first], history) == []
    assert due_notices([first], History(tmp_path / "history.sqlite")) == []
    # touched, then idle again: a new expiry, a new warning
    later = NOW + timedelta(days=13)
    second = expiry_warning(spec, NOW, later)
    assert second is not None and second.expires_at != first.expires_at
    assert len(due_notices([second], history)) == 1
