"""``create_app``: the status page as one Starlette application, the same for ``serve`` and
``watch``.

It opens its own connection to the history file (SQLite in WAL mode, so it reads while a
reconciler in this or another process writes), reads the state directory on demand, and checks
logins through the gateway agent unless a ``login`` check is given (tests pass their own).
On shutdown it ends every open event stream and closes its connection. The application only
reads: no route changes the state, the history or a node.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History
from sdp_reconciler.state.hostconfig import find_host_config
from sdp_reconciler.web import account, pages, stream
from sdp_reconciler.web.context import PageContext
from sdp_reconciler.web.guard import SecurityHeaders, SessionGuard
from sdp_reconciler.web.hub import EventHub
from sdp_reconciler.web.login import GatewayLogin, LoginCheck
from sdp_reconciler.web.rendering import STATIC
from sdp_reconciler.web.sessions import LoginThrottle, SessionStore
from sdp_reconciler.web.settings import WebSettings
from sdp_reconciler.web.stateview import StateView


def routes() -> list[Route | Mount]:
    return [
        Route("/", pages.overview),
        Route("/sandboxes/{name}", pages.sandbox),
        Route("/fragments/overview", pages.overview_fragment),
        Route("/fragments/sandboxes/{name}", pages.sandbox_fragment),
        Route("/history", pages.history),
        Route("/deployments/{id:int}", pages.deployment),
        Route("/audit", pages.audit),
        Route("/templates", pages.templates),
        Route("/environments", pages.environments),
        Route("/nodes", pages.nodes),
        Route("/events", stream.events),
        Route("/login", account.login_form, methods=["GET"]),
        Route("/login", account.login, methods=["POST"]),
        Route("/logout", account.logout, methods=["POST"]),
        Route("/healthz", account.healthz),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]


def create_app(
    *, state_dir: Path, history_path: Path, env: Mapping[str, str] | None = None,
    settings: WebSettings | None = None, login: LoginCheck | None = None,
) -> Starlette:
    """The page over ``history_path`` and ``state_dir``; ``env`` holds the agent tokens'
    variables and the git credentials the nodes page lists branches with (default: os.environ).
    """
    settings = settings or WebSettings()
    env = dict(os.environ) if env is None else env
    history = History(history_path)
    state = StateView(state_dir, env)
    sessions = SessionStore(lifetime=settings.session_seconds)
    context = PageContext(
        settings=settings, history=history, state=state, env=env,
        hub=EventHub(history, interval=settings.poll_interval,
                     queue_size=settings.queue_size),
        sessions=sessions,
        throttle=LoginThrottle(per_user=settings.login_failures_per_user,
                               per_address=settings.login_failures_per_address,
                               window=settings.login_window_seconds),
        login=login or GatewayLogin(state.current, env, timeout=settings.login_timeout),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await context.hub.close()

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(SecurityHeaders), Middleware(SessionGuard, sessions=sessions)],
        lifespan=lifespan,
    )
    app.state.context = context
    # Forwarded headers are believed only from proxies the host names (reconciler.yaml
    # page.trusted_proxies): otherwise anyone could pick the address the login throttle counts.
    try:
        host = find_host_config(env)
    except SdpError:  # the login says why; the page still serves
        host = None
    app.state.trusted_proxies = list(host.model.page.trusted_proxies) if host else []
    return app
