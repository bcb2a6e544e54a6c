"""SDP's processes run no pydantic plugin.

pydantic looks for plugins (the ``pydantic`` entry-point group) the first time it builds a
validator: it imports ``importlib.metadata`` and scans every installed distribution, ~30 ms of
every SDP process's start-up (issue 15). And a plugin, once found, is handed every value
pydantic validates: the wire's credentials and the host config's tokens included. So a package
that happens to be installed beside SDP could read them (DESIGN.md §12). SDP installs its own
answer to pydantic's one question, "which plugins are there?": none.

``refuse()`` must run before pydantic builds its first validator; both packages' ``__init__``
call it. A process that loaded pydantic's plugin loader before importing SDP keeps it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable

LOADER = "pydantic.plugin._loader"  # its only importer: pydantic.plugin._schema_validator


def no_plugins() -> Iterable[object]:
    return ()


def refuse() -> None:
    if LOADER in sys.modules:
        return
    loader = types.ModuleType(LOADER, "SDP: no pydantic plugin (sdp_node/pydanticplugins.py)")
    loader.get_plugins = no_plugins  # type: ignore[attr-defined]
    sys.modules[LOADER] = loader
