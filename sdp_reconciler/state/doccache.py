"""Validated state files kept between loads, keyed by their exact bytes.

A ``watch`` process loads the state directory every pass (and ``--once`` twice), while most
files have not changed since the last load; parsing (ruamel, with positions) and validating
(pydantic) them again was most of ``load_state``'s time. ``DocumentCache`` keeps the
``Document`` built from a file and gives it back when the same file holds the same bytes.

Promises:

* a hit needs the same file (its absolute path and the path and display the loader was
  given), the same model and the same bytes (the SHA-256 of all of them): a file changed by
  one byte, renamed, or the same bytes in another file are parsed and validated afresh, so a
  Document and its ``file:line:col`` positions always describe the bytes just read;
* only documents that loaded without a problem are kept: a broken file is parsed every time,
  so its problems are reported on every load;
* what is handed out is shared, not copied: ``Document`` and its pydantic model are frozen,
  and nothing changes a ``SourceDoc`` after ``parse_source`` built it;
* bounded (``max_entries`` documents, ``max_bytes`` of their files' bytes), the least
  recently used going first; safe to use from several threads (the web page's thread loads
  the state too). Nothing in it outlives the process.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

from sdp_reconciler.state.documents import Document

MAX_ENTRIES = 1024
MAX_BYTES = 32 * 1024 * 1024


class CacheKey(NamedTuple):
    """What a cached Document depends on: the file, as the loader names it, and its bytes."""

    absolute: str
    path: str
    display: str
    model: type
    sha256: str

    @classmethod
    def of(cls, path: Path, display: str, model: type, raw: bytes) -> CacheKey:
        return cls(os.path.abspath(path), str(path), display, model,
                   hashlib.sha256(raw).hexdigest())


class DocumentCache:
    """A bounded, thread-safe map of ``CacheKey`` to the Document those bytes gave."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, tuple[Document[Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> Document[Any] | None:
        """The Document stored under ``key`` (now the most recently used), else None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: CacheKey, document: Document[Any], size: int) -> None:
        """Keep ``document``, built from ``size`` bytes, evicting the least recently used
        entries beyond the bounds (a file larger than ``max_bytes`` is not kept)."""
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (document, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


DOCUMENTS = DocumentCache()
"""The process's cache, used by ``loading.load_state``."""
