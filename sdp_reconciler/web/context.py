"""What every request handler of the page shares: settings, stores, the state and the hub.

Built once by ``create_app`` and kept on ``app.state.context``. The page reads the history and
the state directory and asks agents; it never writes to any of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgspec import Struct

from sdp_reconciler.history import History
from sdp_reconciler.web.hub import EventHub
from sdp_reconciler.web.login import LoginCheck
from sdp_reconciler.web.sessions import LoginThrottle, SessionStore
from sdp_reconciler.web.settings import WebSettings
from sdp_reconciler.web.stateview import StateView


class PageContext(Struct):
    settings: WebSettings
    history: History
    state: StateView
    env: Mapping[str, str]
    hub: EventHub
    sessions: SessionStore
    throttle: LoginThrottle
    login: LoginCheck
