"""The reconciler: converges SDP sandboxes to the state directory through the node agents.

Layers, each a package whose ``__init__`` says what it owns and what it may import:
``state`` (what the state directory says) → ``planner`` (pure: what should change) →
``observe`` (what the nodes run) and ``apply`` (one pass, carried out by the agents), with
``cli`` and ``web`` at the edge and ``access`` (who may change what) beside ``state``.
``errors``, ``redaction``, ``statuses`` (the status vocabulary) and ``history`` are shared by
all (``history`` with its two databases behind ``historydb``, and ``historycopy`` for
``history migrate``).
"""

import sys as _sys

# httpx's ``__init__`` imports its own command line (``httpx._main``: click and pygments, and
# rich when installed) only to offer ``httpx.main``, which SDP never calls: ~10 ms of every
# start-up (issue 15). Marked absent, httpx falls back to its stub ``main`` (it catches the
# ImportError for installs without the CLI extras). An importer that already loaded it keeps it.
_sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from sdp_node import pydanticplugins as _pydanticplugins  # noqa: E402

_pydanticplugins.refuse()  # before pydantic builds a validator: see the module
