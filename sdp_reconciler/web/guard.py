"""ASGI middleware of the page: the session guard and the security headers.

``SessionGuard``: every path except ``/login``, ``/healthz`` and ``/static/`` needs a live
session cookie. Without one, a browser asking for a page is sent to ``/login?next=<path>``;
anything else (the event stream, a fragment the script refetches, a POST) gets 401. The
session found is put in ``request.state.session`` for the handlers.

``SecurityHeaders``: a strict Content-Security-Policy (scripts and styles only from
``/static``, no inline code, no framing), ``nosniff``, no referrer to other sites
(``same-origin``; with ``no-referrer`` browsers send ``Origin: null`` on form posts, which the
login check refuses), and ``no-store`` on everything but static files, so a page shown after
logout is never served from cache.
"""

from __future__ import annotations

import hmac
from urllib.parse import quote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdp_reconciler.web.sessions import COOKIE, SessionStore

PUBLIC_PATHS = frozenset({"/login", "/healthz"})
STATIC_PREFIX = "/static/"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX)


def safe_next(value: str | None) -> str:
    """A local path to go to after login; anything else (another site) becomes ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def same_origin(request: Request) -> bool:
    """False when the browser says the form was posted from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


class SessionGuard:
    """``metrics_token``: ``/metrics`` also answers ``Authorization: Bearer <it>`` (a scraper
    has no session); None: only a session."""

    def __init__(self, app: ASGIApp, sessions: SessionStore,
                 metrics_token: str | None = None) -> None:
        self.app = app
        self.sessions = sessions
        self._metrics_token = metrics_token.encode() if metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if scope["path"] == "/metrics" and self._metrics_token is not None:
            given = request.headers.get("authorization", "").encode()
            if hmac.compare_digest(given, b"Bearer " + self._metrics_token):
                await self.app(scope, receive, send)
                return
        token = request.cookies.get(COOKIE)
        session = self.sessions.get(token)
        if session is None:
            await self._refuse(request)(scope, receive, send)
            return
        scope.setdefault("state", {})
        scope["state"]["session"] = session
        scope["state"]["session_token"] = token
        await self.app(scope, receive, send)

    @staticmethod
    def _refuse(request: Request) -> Response:
        path = request.url.path
        wants_page = request.method in ("GET", "HEAD") and "text/html" in request.headers.get(
            "accept", "") and path != "/events" and not path.startswith("/fragments/")
        if wants_page:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return PlainTextResponse("sign in first: POST /login", status_code=401)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CSP)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                headers.setdefault("X-Frame-Options", "DENY")
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
