"""The status page's tunables, with the defaults ``serve`` and ``watch`` use.

One frozen value handed to ``create_app``; tests shorten the intervals and lifetimes here
rather than patching modules.
"""

from __future__ import annotations

from msgspec import Struct

DEFAULT_LISTEN = "127.0.0.1:3452"


class WebSettings(Struct, frozen=True):
    poll_interval: float = 0.25
    """How often the one shared poller looks for new rows in the history's events table
    (SQLite; a PostgreSQL history pushes each write with NOTIFY instead)."""
    listen_fallback: float = 5.0
    """On PostgreSQL, read the events this often even without a NOTIFY (one lost in a
    reconnect cannot stall a page for longer)."""
    heartbeat_seconds: float = 15.0
    """Comment lines sent on an idle stream, so proxies and browsers keep it open."""
    retry_ms: int = 2000
    """The reconnect delay an EventSource is told to use."""
    catch_up_limit: int = 5000
    """A reconnect further behind than this gets a ``reload`` event instead of the backlog."""
    queue_size: int = 1000
    """Events held for one slow stream before it falls back to reading the history itself."""
    session_seconds: float = 12 * 3600
    login_failures_per_user: int = 5
    login_failures_per_address: int = 20
    login_window_seconds: float = 15 * 60
    node_timeout: float = 3.0
    """Timeout of each agent call made for the nodes page (branch listings get 3x this)."""
    login_timeout: float = 20.0
    """Timeout of the ls-remote that checks a login through the gateway agent."""
    secure_cookies: bool | None = None
    """Mark the session cookie ``Secure``; None: only when the request came over https."""
    page_rows: int = 100
    """Rows per page of the history and audit tables."""
    log_lines: int = 300
    """Log lines shown when a sandbox page opens (later ones arrive over the stream)."""
