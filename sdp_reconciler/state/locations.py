"""Where something is written in the state, and a problem found there. Pure data.

``Location`` is ``file:line:col`` (counting from 1); ``Problem`` pairs it with the key path and
a message that says what to change. Every stage reports in these terms: the loader, the
whole-state rules and the planner.
"""

from __future__ import annotations

from msgspec import Struct

PathKey = tuple[str | int, ...]


class Location(Struct, frozen=True, order=True):
    """A place in a state file; lines and columns count from 1."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Problem(Struct, frozen=True, order=True):
    """One thing wrong with the state, where it is, and what to change."""

    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


def dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
