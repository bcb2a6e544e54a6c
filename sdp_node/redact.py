"""Redaction of credentials and resolved secret values, once, where text leaves the agent.

An operation registers every sensitive value it was given (the git username and password, the
environment's secret values); every event and log line of that operation passes through its
``Redactor`` before it is stored in the event log, so nothing downstream (SSE, the reconciler's
SQLite, the page) ever sees them. Encoded forms that tools tend to print are covered too:
percent-encoding, ``+``-for-space encoding, base64 of the value and of ``user:password``, and
the value's UTF-8 bytes read as latin-1 (the spelling handed to dulwich, see
``sdp_node.gitremote.dulwich_credentials``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
_MIN_LENGTH = 3  # shorter values would mask ordinary words; tokens that short are not secrets


def _forms(value: str) -> set[str]:
    forms = {value, quote(value, safe=""), quote_plus(value), quote(value)}
    forms.add(base64.b64encode(value.encode()).decode())
    forms.add(value.encode().decode("latin-1"))
    return {f for f in forms if len(f) >= _MIN_LENGTH}


class Redactor:
    def __init__(self, values: Iterable[str] = (), *, pairs: Iterable[tuple[str, str]] = ()):
        forms: set[str] = set()
        for value in values:
            forms |= _forms(value)
        for user, password in pairs:
            forms.add(base64.b64encode(f"{user}:{password}".encode()).decode())
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)
