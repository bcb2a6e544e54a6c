"""Jinja2 for the page: templates from ``templates/``, every value escaped (autoescape on).

``render`` adds what every page needs (the viewer's session, the current path for the menu)
and answers HTML. Times are printed as ``<time datetime=ISO>`` holding UTC text; the page's
script rewrites them in the viewer's local time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from sdp_reconciler.access.enforcement import roles_in_force

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def short_commit(value: str | None, length: int = 7) -> str:
    return value[:length] if value else "—"


def utc_text(value: str | None) -> str:
    """``2026-11-29T15:51:02.443+00:00`` -> ``2026-11-29 15:51:02 UTC`` (before the script runs)."""
    if not value:
        return "—"
    return value[:19].replace("T", " ") + " UTC"


_TONES = {
    "ok": {"Healthy", "InSync", "RUNNING", "SUCCESS", "CONVERGED", "Reachable", "UpToDate",
           "Deployed", "done"},
    "warn": {"Progressing", "OutOfSync", "QUEUED", "Degraded", "running", "ChangesPending"},
    "bad": {"Unhealthy", "FAILED", "ERROR", "NOT_CONVERGED", "REFUSED", "Unreachable",
            "DeployFailed", "failed"},
}


def tone(value: str | None) -> str:
    """The colour family of a status word; the word itself is always shown next to it."""
    for name, words in _TONES.items():
        if value in words:
            return name
    return "muted"


def build_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = short_commit
    env.filters["utc"] = utc_text
    env.globals["tone"] = tone
    return env


_ENVIRONMENT = build_environment()


def render(request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    state = request.scope.get("state", {})
    session = state.get("session")
    page = _ENVIRONMENT.get_template(name).render(
        session=session, path=request.url.path, roles=_roles(request, session), **context)
    return HTMLResponse(page, status_code=status)


def _roles(request: Request, session: Any) -> str:
    """What the signed-in user may change, as the last pass's access.yaml says."""
    page = getattr(request.app.state, "context", None)
    if session is None or page is None:
        return ""
    roles = roles_in_force(page.history, session.username)
    if roles is None:
        return "every permission (no access.yaml)"
    return ", ".join(roles) if roles else "no role in access.yaml"


def render_text(name: str, **context: Any) -> str:
    return _ENVIRONMENT.get_template(name).render(**context)
