"""YAML files -> plain data plus the source position of every key and value.

Responsible for reading one state file safely and remembering where each thing was written, so
every later stage (schema checks, whole-state rules, the planner) can report a problem as
``file:line:col``. Promises:

* a file is refused before parsing when it is larger than ``MAX_FILE_BYTES``;
* anchors/aliases (the "billion laughs"), explicit tags other than YAML's core ones
  (``!!python/object`` and friends), several documents in one file, nesting deeper than
  ``MAX_DEPTH`` and duplicate keys are refused with the position of the offending token;
* nothing in a file is ever executed or constructed beyond plain maps, lists and scalars.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from msgspec import Struct, field
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    NodeEvent,
)
from ruamel.yaml.parser import RoundTripParser
from ruamel.yaml.reader import ReaderError

from sdp_reconciler.state.locations import Location, PathKey, Problem, dotted

__all__ = [  # Location, Problem and dotted live in locations.py; re-exported for callers
    "MAX_DEPTH", "MAX_FILE_BYTES", "Location", "PathKey", "Problem", "SourceDoc", "SourceError",
    "decode_source", "dotted", "iter_paths", "load_source", "parse_source", "read_source",
]

MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 16
_CORE_TAGS = {
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
}


class SourceDoc(Struct):
    """A parsed file: plain data and the positions of its keys and values.

    Complete when ``parse_source`` returns it and never changed after that: the state loader
    hands the same SourceDoc to every load of the same bytes (``state/doccache.py``).
    """

    file: str
    data: Any
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """Position of the value at ``path`` (or of its key), else of the nearest ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return Location(self.file, *table[probe])
            if probe in self.values:
                return Location(self.file, *self.values[probe])
            probe = probe[:-1]
        return Location(self.file, *self.values.get((), (1, 1)))


class SourceError(Exception):
    """A file could not be read as a safe YAML document; ``problem`` says where and why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def load_source(path: Path, display: str) -> SourceDoc:
    """Read ``path`` as one safe YAML document; raise SourceError with its position.

    ``read_source`` then ``decode_source``: callers that want the bytes in between (the state
    loader keys its cache of documents on them) call the two themselves.
    """
    return decode_source(read_source(path, display), display)


def read_source(path: Path, display: str) -> bytes:
    """The bytes of ``path``, refused unread (SourceError) when it is larger than
    ``MAX_FILE_BYTES``, or when it grew past the bound while being read."""
    try:
        size = path.stat().st_size
        if size <= MAX_FILE_BYTES:
            with path.open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
            size = max(size, len(raw))
    except OSError as e:
        raise SourceError(Problem(Location(display), "", f"cannot read file: {e.strerror}")) from e
    if size > MAX_FILE_BYTES:
        raise SourceError(
            Problem(
                Location(display), "",
                f"file is {size} bytes; state files are limited to {MAX_FILE_BYTES} bytes",
            )
        )
    return raw


def decode_source(raw: bytes, display: str) -> SourceDoc:
    """``raw`` as UTF-8 (a BOM is allowed) parsed as one safe YAML document (``parse_source``);
    bytes that are not UTF-8 are refused with the line and column of the first bad one."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        # Everything before e.start decoded, so the column counts characters, not bytes.
        col = len(raw[line_start : e.start].decode("utf-8-sig" if line == 1 else "utf-8")) + 1
        raise SourceError(
            Problem(
                Location(display, line, col), "",
                f"file is not valid UTF-8 (byte 0x{raw[e.start]:02X}); save it as UTF-8",
            )
        ) from None
    return parse_source(text, display)


def parse_source(text: str, display: str) -> SourceDoc:
    loader = YAML(typ="rt")
    loader.allow_duplicate_keys = False
    loader.Parser = _ScreeningParser
    loader.parser.display = display
    try:
        tree = loader.load(text)
    except MarkedYAMLError as e:
        raise SourceError(_marked_problem(e, display)) from None
    except ReaderError as e:
        raise SourceError(_reader_problem(e, text, display)) from None
    except YAMLError as e:
        raise SourceError(Problem(Location(display), "", f"YAML error: {e}")) from None
    if tree is None:
        raise SourceError(Problem(Location(display), "", "file is empty"))
    doc = SourceDoc(file=display, data=None)
    doc.values[()] = (1, 1)
    doc.data = _walk(tree, (), doc)
    return doc


class _ScreeningParser(RoundTripParser):
    """The round-trip parser, refusing unsafe constructs event by event as it makes them.

    The file is parsed once: the composer asks for every event of the document (and the
    next one, to refuse a second document) before anything is constructed, so an alias, a
    foreign tag, a second document or a nesting too deep is refused before it is used.
    """

    display = ""
    _depth = 0
    _documents = 0

    def _next(self) -> None:
        if self.current_event is None and self.state:
            self.current_event = self.state()
            self._screen(self.current_event)

    def check_event(self, *choices: Any) -> bool:
        self._next()
        return bool(super().check_event(*choices))

    def peek_event(self) -> Any:
        self._next()
        return super().peek_event()

    def get_event(self) -> Any:
        self._next()
        return super().get_event()

    def _screen(self, event: Any) -> None:
        mark = event.start_mark
        where = Location(self.display, mark.line + 1, mark.column + 1)
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            raise SourceError(
                Problem(where, "", "YAML anchors and aliases are not allowed in state files")
            )
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _CORE_TAGS and tag != "!":
            raise SourceError(Problem(where, "", f"YAML tag {tag!r} is not allowed in state files"))
        if isinstance(event, DocumentStartEvent):
            self._documents += 1
            if self._documents > 1:
                raise SourceError(
                    Problem(where, "", "a state file holds one YAML document, not several")
                )
        if isinstance(event, CollectionStartEvent):
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise SourceError(Problem(where, "", f"nesting is deeper than {MAX_DEPTH} levels"))
        elif isinstance(event, CollectionEndEvent):
            self._depth -= 1


def _reader_problem(e: ReaderError, text: str, display: str) -> Problem:
    # A character YAML forbids (NUL, most control characters): ruamel gives only an offset.
    position = min(e.position, len(text))
    line = text.count("\n", 0, position) + 1
    col = position - text.rfind("\n", 0, position)
    return Problem(
        Location(display, line, col), "",
        f"character U+{e.character:04X} is not allowed in a YAML file",
    )


def _marked_problem(e: MarkedYAMLError, display: str) -> Problem:
    mark = e.problem_mark or e.context_mark
    where = Location(display, mark.line + 1, mark.column + 1) if mark else Location(display)
    problem = str(e.problem or e.context or "YAML syntax error").strip()
    if "duplicate key" in problem:
        problem = problem.split(" with value")[0].replace("found duplicate key", "duplicate key")
        return Problem(where, "", f"{problem}: each key may appear once in a mapping")
    context = ""
    if e.context and e.problem:
        context = str(e.context).strip()
        start = e.context_mark
        if start is not None and mark is not None and start.line != mark.line:
            # An unclosed '{' or '[' is found at the end of the file; say where it opened.
            context += f" that starts at {start.line + 1}:{start.column + 1}"
        context = f" ({context})"
    return Problem(where, "", f"YAML syntax error: {problem}{context}")


def _walk(node: Any, path: PathKey, doc: SourceDoc) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key in node:
            plain_key = _scalar(key)
            child = (*path, plain_key if isinstance(plain_key, str) else str(plain_key))
            try:
                k_line, k_col = node.lc.key(key)
                v_line, v_col = node.lc.value(key)
            except (KeyError, TypeError):  # pragma: no cover - ruamel always records these
                k_line, k_col, v_line, v_col = node.lc.line, node.lc.col, node.lc.line, node.lc.col
            if node[key] is None:
                # An empty value ("user:") is marked where the next token starts, often on the
                # next line; the key is where the reader looks.
                v_line, v_col = k_line, k_col
            doc.keys[child] = (k_line + 1, k_col + 1)
            doc.values[child] = (v_line + 1, v_col + 1)
            out[plain_key] = _walk(node[key], child, doc)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, item in enumerate(node):
            child = (*path, index)
            try:
                line, col = node.lc.item(index)
            except (KeyError, TypeError):  # pragma: no cover
                line, col = node.lc.line, node.lc.col
            doc.values[child] = (line + 1, col + 1)
            items.append(_walk(item, child, doc))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)
    return value


def iter_paths(data: Any, path: PathKey = ()) -> Iterator[tuple[PathKey, Any]]:
    """Every (path, value) in a plain tree, parents before children."""
    yield path, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from iter_paths(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from iter_paths(value, (*path, index))
