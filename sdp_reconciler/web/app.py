"""``create_app``: the status page as one Starlette application, the same for ``serve`` and
``watch``.

It opens its own connection to the history (SQLite in WAL mode, so it reads while a
reconciler in this or another process writes; or PostgreSQL, shared with reconcilers and other
page hosts anywhere), keeps its viewers' sessions there, reads the state directory on demand,
and checks logins through the gateway agent unless a ``login`` check is given (tests pass their
own). On shutdown it ends every open event stream and closes its connection. The application
only reads: no route changes the state, the history (but for its sessions) or a node
(``watch``'s webhook endpoint, passed in ``extra_routes``, only asks for a pass).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from sdp_reconciler.errors import SdpError
from sdp_reconciler.history import History
from sdp_reconciler.historydb import Location
from sdp_reconciler.state.hostconfig import find_host_config
from sdp_reconciler.web import account, pages, prom, stream
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
        Route("/metrics", prom.metrics),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]


def create_app(
    *, state_dir: Path, history_path: Path | str | Location, env: Mapping[str, str] | None = None,
    settings: WebSettings | None = None, login: LoginCheck | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The page over ``history_path`` and ``state_dir``; ``env`` holds the agent tokens'
    variables and the git credentials the nodes page lists branches with (default: os.environ).
    ``extra_routes``: what the process serves besides the page on the same listener
    (``watch``'s ``POST /hooks/bitbucket``).
    """
    settings = settings or WebSettings()
    env = dict(os.environ) if env is None else env
    history = History(history_path, env=env)
    state = StateView(state_dir, env)
    sessions = SessionStore(history, lifetime=settings.session_seconds)
    context = PageContext(
        settings=settings, history=history, state=state, env=env,
        hub=EventHub(history, interval=settings.poll_interval, queue_size=settings.queue_size,
                     listen_fallback=settings.listen_fallback),
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
        routes=[*extra_routes, *routes()],
        middleware=[Middleware(SecurityHeaders), Middleware(
            SessionGuard, sessions=sessions,
            metrics_token=env.get("SDP_METRICS_TOKEN") or None)],
        lifespan=lifespan,
    )
    app.state.context = context
    def hook_counts() -> dict[str, int] | None:
        counters = getattr(app.state, "hook_counters", None)  # set by watch's webhook endpoint
        return counters.snapshot() if counters is not None else None

    app.state.prometheus = prom.registry_for(history, lambda: context.hub.open_streams,
                                             hook_counts)
    # Forwarded headers are believed only from proxies the host names (reconciler.yaml
    # page.trusted_proxies): otherwise anyone could pick the address the login throttle counts.
    try:
        host = find_host_config(env)
    except SdpError:  # the login says why; the page still serves
        host = None
    app.state.trusted_proxies = list(host.model.page.trusted_proxies) if host else []
    return app
