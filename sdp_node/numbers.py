"""Whole numbers from outside: a query parameter, a header, the port of a listen address.

``str.isdigit`` is not the test to use before ``int``: it also takes '²' and other digits that
``int`` refuses, and ``int`` refuses more than 4,300 digits; either was a 500 or a traceback.
Both sides call this (``sdp_node`` never imports ``sdp_reconciler``).
"""

from __future__ import annotations


def plain_number(value: str | None, *, at_most: int) -> int | None:
    """``value`` (surrounding blanks aside) as a whole number of ASCII digits, clamped to
    ``at_most``; None for anything else (a sign, a point, an exponent, other digits)."""
    value = (value or "").strip()
    if not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0") or "0"
    return at_most if len(digits) > len(str(at_most)) else min(int(digits), at_most)


def port_number(value: str) -> int | None:
    """``value`` as a TCP port (0-65535), or None."""
    number = plain_number(value, at_most=65536)
    return None if number is None or number > 65535 else number
