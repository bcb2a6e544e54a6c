"""Text from containers made safe for an operator's terminal.

A container's log is written by branch code: it may hold escape sequences that move the
cursor, rewrite the window title, set the clipboard (OSC 52) or hide text. ``printable``
removes every control sequence (CSI, OSC, DCS/PM/APC strings, other escapes) and every other
C0/C1 control character except the tab, and keeps the text.
"""

from __future__ import annotations

import re

_SEQUENCES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]                     # CSI ... final byte
    | \x9b[0-?]*[ -/]*[@-~]                     # 8-bit CSI
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])   # OSC, DCS, SOS, PM, APC (7- or 8-bit) ...
      .*?(?:\x07|\x1b\\|\x9c|$)                 # ... up to BEL or ST (or the end)
    | \x1b[ -/]*[0-~]                           # other escapes (ESC c, ESC ( B, ...)
    """,
    re.VERBOSE | re.DOTALL,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without terminal control sequences or control characters (tabs kept)."""
    return _CONTROLS.sub("", _SEQUENCES.sub("", text))


__all__ = ["printable"]
