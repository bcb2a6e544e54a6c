"""Fixtures for the state-directory tests: a private copy of the example state to break.

``state_dir`` copies the repository's ``state/`` into ``tmp_path``; ``write_files`` lays files
over such a copy and ``problems_of`` loads it expecting ``StateError``, returning each problem
as ``file:line:col: path: message`` with the file relative to the state directory. Plain
functions as well as fixtures, because hypothesis tests cannot take function-scoped fixtures.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from sdp_reconciler.errors import StateError
from sdp_reconciler.state.loading import LoadedState, load_state

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_STATE = REPO / "state"
SCHEMAS = REPO / "schemas"

FileContents = Mapping[str, str | bytes | None]
"""Path relative to the state directory -> new content; None deletes the file."""


def copy_example(destination: Path) -> Path:
    """A copy of the example state at ``destination`` (which must not exist yet)."""
    shutil.copytree(EXAMPLE_STATE, destination)
    return destination


def write_files(root: Path, files: FileContents) -> None:
    for relative, content in files.items():
        path = root / relative
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def relative_lines(root: Path, error: StateError) -> list[str]:
    """Each problem as one line, its file relative to ``root``."""
    prefix = f"{root}/"
    return [str(p).removeprefix(prefix) for p in error.problems]


def problems_of(root: Path, files: FileContents | None = None) -> list[str]:
    """Write ``files`` over ``root``, load it, and return the problems; fail if it loads."""
    write_files(root, files or {})
    try:
        state = load_state(root)
    except StateError as e:
        return relative_lines(root, e)
    pytest.fail(f"state in {root} loaded without problems: {state!r}")


def loads(root: Path, files: FileContents | None = None) -> LoadedState:
    """Write ``files`` over ``root`` and load it; fail with the problems if it does not load."""
    write_files(root, files or {})
    try:
        return load_state(root)
    except StateError as e:
        pytest.fail("\n".join(relative_lines(root, e)))


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root``: its bytes, mode and modification time."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        content = path.read_bytes() if path.is_file() else b""
        out[str(path.relative_to(root))] = (content, stat.st_mode, stat.st_mtime_ns)
    return out


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private copy of the example state directory."""
    return copy_example(tmp_path / "state")


@pytest.fixture
def broken(state_dir: Path) -> Callable[[FileContents], list[str]]:
    """``broken({"sandboxes/X.yaml": "..."})`` -> the problems the loader reports."""
    return lambda files: problems_of(state_dir, files)
