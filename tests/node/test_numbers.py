"""``sdp_node/numbers.py``: what counts as a whole number from outside, for both sides."""

from __future__ import annotations

import pytest

from sdp_node.numbers import plain_number, port_number


@pytest.mark.parametrize(("value", "expected"), [
    ("12", 12), (" 12 ", 12), ("0", 0), ("0" * 30 + "7", 7), ("100", 100), ("101", 100),
    ("9" * 5000, 100),  # more than int() reads: clamped, not a ValueError
    (None, None), ("", None), ("²", None), ("١٢", None), ("-1", None), ("+1", None),
    ("1e3", None), ("1.0", None), ("1 2", None),
])
def test_plain_numbers_are_ascii_digits_clamped(value: str | None, expected: int | None) -> None:
    assert plain_number(value, at_most=100) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("80", 80), ("65535", 65535), ("0", 0), ("65536", None), ("9" * 5000, None), ("²", None),
    ("", None), ("x", None),
])
def test_ports(value: str, expected: int | None) -> None:
    assert port_number(value) == expected
