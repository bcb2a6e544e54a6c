"""Signing in and out, and the health endpoint.

``POST /login`` takes the Bitbucket username and password from the form, refuses at once when
the throttle says this user or address failed too often, checks them through the gateway agent
(``login.py``) and, when good, starts a new session (``sessions.py``) and forgets the
password. The password is never put in a response, a log line, the history or a cookie; the
login form posts it in the body, never in a URL. Failures are logged with the client address
only. ``POST /logout`` ends the session. ``GET /healthz`` answers without a session: it tells
a supervisor (and the SSE tests) how many event streams are open.
"""

from __future__ import annotations

import logging
import math

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from sdp_reconciler.web.context import PageContext
from sdp_reconciler.web.forms import FormTooLarge, read_form
from sdp_reconciler.web.guard import safe_next, same_origin
from sdp_reconciler.web.login import LoginRefused, LoginUnavailable
from sdp_reconciler.web.rendering import render
from sdp_reconciler.web.sessions import COOKIE

log = logging.getLogger("sdp_reconciler.web")


def _context(request: Request) -> PageContext:
    context: PageContext = request.app.state.context
    return context


async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=safe_next(request.query_params.get("next")),
                  username="", error=None)


async def login(request: Request) -> Response:
    context = _context(request)
    if not same_origin(request):
        return PlainTextResponse("cross-site login refused", status_code=403)
    try:
        form = await read_form(request)
    except (FormTooLarge, ValueError):
        return PlainTextResponse("login form too large", status_code=413)
    username = form.get("username", "").strip()
    target = safe_next(form.get("next"))
    address = request.client.host if request.client else "unknown"

    def again(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
        response = render(request, "login.html", status=status, next=target,
                          username=username, error=error)
        response.headers.update(headers or {})
        return response

    if not username or not form.get("password"):
        return again(400, "Enter your Bitbucket username and password.")
    wait = context.throttle.retry_after(username, address)
    if wait > 0:
        minutes = max(1, math.ceil(wait / 60))
        return again(429, f"Too many failed logins for this user or address; try again in "
                          f"{minutes} minute{'s' if minutes != 1 else ''}.",
                     {"Retry-After": str(math.ceil(wait))})
    try:
        await run_in_threadpool(context.login, username, form.pop("password"))
    except LoginRefused as e:
        context.throttle.failed(username, address)
        log.warning("login refused (client %s)", address)
        return again(403, str(e))
    except LoginUnavailable as e:
        log.warning("login could not be checked (client %s): %s", address, e.detail)
        return again(503, str(e))
    context.throttle.succeeded(username)
    token = context.sessions.create(username, replacing=request.cookies.get(COOKIE))
    response = RedirectResponse(target, status_code=303)
    secure = context.settings.secure_cookies
    response.set_cookie(
        COOKIE, token, max_age=int(context.sessions.lifetime), path="/", httponly=True,
        samesite="lax", secure=request.url.scheme == "https" if secure is None else secure,
    )
    return response


async def logout(request: Request) -> Response:
    if not same_origin(request):
        return PlainTextResponse("cross-site logout refused", status_code=403)
    context = _context(request)
    token = request.cookies.get(COOKIE)
    context.sessions.end(token)
    context.hub.end_session(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


async def healthz(request: Request) -> Response:
    hub = _context(request).hub
    return JSONResponse({"ok": True, "open_streams": hub.open_streams, "polling": hub.polling})
