"""``printable``: a container's log line reaches the operator's terminal as text only."""

from __future__ import annotations

import pytest

from sdp_reconciler.cli.terminal import printable


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain line\twith a tab", "plain line\twith a tab"),
    ("\x1b[31mred\x1b[0m text", "red text"),
    ("\x1b[2J\x1b[Hcleared", "cleared"),
    ("title\x1b]0;pwned\x07 kept", "title kept"),
    ("clip\x1b]52;c;ZWNobyBwd25lZA==\x1b\\ board", "clip board"),
    ("8-bit \x9b31mcsi\x9b0m", "8-bit csi"),
    ("dcs \x1bPq#0;2;0;0;0\x1b\\ gone", "dcs  gone"),
    ("bell\x07 and backspace\x08 and cr\r", "bell and backspace and cr"),
    ("unterminated \x1b]8;;http://evil.invalid", "unterminated "),
    ("é ü 中文 stay", "é ü 中文 stay"),
])
def test_control_sequences_go_and_the_text_stays(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert not any((ord(c) < 0x20 and c != "\t") or 0x7f <= ord(c) <= 0x9f for c in printable(raw))
