"""The page's HTML routes: overview, sandbox, history, deployment, audit, templates,
environments and nodes, plus the fragments the script refetches when the status changes.

Handlers only read: the history (SQLite), the state directory and, for the nodes page, the
agents. Each gathers its data in a worker thread (SQLite and the agents' client are blocking)
and renders one template.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sdp_reconciler.errors import SdpError
from sdp_reconciler.web import catalog, queries
from sdp_reconciler.web.charts import resource_views, sandbox_loads
from sdp_reconciler.web.context import PageContext
from sdp_reconciler.web.nodes import survey
from sdp_reconciler.web.rendering import render
from sdp_reconciler.web.views import deployment_views, sandbox_summaries


def _context(request: Request) -> PageContext:
    context: PageContext = request.app.state.context
    return context


def _int_param(request: Request, name: str) -> int | None:
    return queries.row_id(request.query_params.get(name))


async def _gather(function: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return await run_in_threadpool(function)


# -- overview --------------------------------------------------------------------------------------


def _overview(context: PageContext) -> dict[str, Any]:
    history = context.history
    sandboxes = sandbox_summaries(queries.status_rows(history), context.state.sandboxes())
    healths = {s.name: [line.health for line in ([s.gateway] if s.gateway else []) + s.services]
               for s in sandboxes}
    return {
        "sandboxes": sandboxes,
        "loads": sandbox_loads(healths, queries.latest_samples(history)),
        "state_problem": context.state.problem(),
        "last_pass": queries.last_pass(history),
        "last_event_id": queries.last_event_id(history),
    }


async def overview(request: Request) -> Response:
    data = await _gather(lambda: _overview(_context(request)))
    return render(request, "overview.html", **data)


async def overview_fragment(request: Request) -> Response:
    data = await _gather(lambda: _overview(_context(request)))
    return render(request, "_overview_status.html", **data)


# -- one sandbox -----------------------------------------------------------------------------------


def _sandbox(context: PageContext, name: str) -> dict[str, Any] | None:
    history = context.history
    last_event_id = queries.last_event_id(history)
    summaries = [s for s in sandbox_summaries(queries.status_rows(history, name),
                                              context.state.sandboxes()) if s.name == name]
    if not summaries:
        return None
    deployments = queries.latest_deployments(history, name)
    events = queries.deployment_events(history, [int(d["id"]) for d in deployments])
    return {
        "sandbox": summaries[0],
        "deployments": deployment_views(deployments, events),
        "resources": resource_views(queries.samples(history, name)),
        "pass_started_at": deployments[0]["pass_started_at"] if deployments else None,
        "logs": queries.recent_logs(history, name, limit=context.settings.log_lines),
        "last_event_id": last_event_id,
        "state_problem": context.state.problem(),
    }


async def sandbox(request: Request) -> Response:
    name = request.path_params["name"]
    data = await _gather(lambda: _sandbox(_context(request), name) or {})
    if not data:
        return render(request, "error.html", status=404, title="No such sandbox",
                      message=f"There is no sandbox {name!r} in the state or the history.")
    return render(request, "sandbox.html", **data)


async def sandbox_fragment(request: Request) -> Response:
    name = request.path_params["name"]
    data = await _gather(lambda: _sandbox(_context(request), name) or {})
    if not data:
        return Response("no such sandbox", status_code=404, media_type="text/plain")
    return render(request, "_sandbox_live.html", **data)


# -- history, deployment, audit --------------------------------------------------------------------


async def history(request: Request) -> Response:
    context = _context(request)
    params = request.query_params
    where = queries.DeploymentFilter(
        sandbox=params.get("sandbox") or None, repository=params.get("repository") or None,
        status=params.get("status") or None, before=_int_param(request, "before"),
    )
    limit = context.settings.page_rows

    def gather() -> dict[str, Any]:
        rows = queries.deployments(context.history, where, limit=limit)
        return {"rows": rows, "choices": queries.deployment_choices(context.history),
                # The passes, with what started each, on the unfiltered first page only.
                "passes": [] if where.sandbox or where.repository or where.status
                or where.before is not None else queries.recent_passes(context.history),
                "where": where, "more": rows[-1]["id"] if len(rows) == limit else None}

    return render(request, "history.html", **await _gather(gather))


async def deployment(request: Request) -> Response:
    context = _context(request)
    deployment_id = int(request.path_params["id"])

    def gather() -> dict[str, Any]:
        if deployment_id > queries.ROW_ID_MAX:
            return {}
        row = queries.deployment(context.history, deployment_id)
        if row is None:
            return {}
        events = queries.deployment_events(context.history, [deployment_id])
        return {"row": row, "view": deployment_views([row], events)[0], "events": events}

    data = await _gather(gather)
    if not data:
        return render(request, "error.html", status=404, title="No such deployment",
                      message=f"There is no deployment {deployment_id} in the history.")
    return render(request, "deployment.html", **data)


async def audit(request: Request) -> Response:
    context = _context(request)
    sandbox_filter = request.query_params.get("sandbox") or None
    before = _int_param(request, "before")
    limit = context.settings.page_rows

    def gather() -> dict[str, Any]:
        rows = queries.audit(context.history, sandbox=sandbox_filter, before=before,
                             limit=limit)
        return {"rows": rows, "sandboxes": queries.audit_sandboxes(context.history),
                "selected": sandbox_filter or "",
                "more": rows[-1]["id"] if len(rows) == limit else None}

    return render(request, "audit.html", **await _gather(gather))


# -- the state: templates, environments ------------------------------------------------------------


def _catalog(context: PageContext, kind: str) -> dict[str, Any]:
    try:
        state = context.state.current()
    except SdpError as e:
        return {"entries": [], "state_problem": str(e)}
    sandboxes = context.state.sandboxes()
    entries: list[Any] = (catalog.templates(state, sandboxes) if kind == "templates"
                          else catalog.environments(state, sandboxes))
    return {"entries": entries, "state_problem": None}


async def templates(request: Request) -> Response:
    data = await _gather(lambda: _catalog(_context(request), "templates"))
    return render(request, "templates.html", **data)


async def environments(request: Request) -> Response:
    data = await _gather(lambda: _catalog(_context(request), "environments"))
    return render(request, "environments.html", **data)


# -- nodes -----------------------------------------------------------------------------------------


async def nodes(request: Request) -> Response:
    context = _context(request)

    def gather() -> dict[str, Any]:
        try:
            state = context.state.current()
        except SdpError as e:
            return {"reports": [], "state_problem": str(e)}
        reports = survey(state, context.env, timeout=context.settings.node_timeout)
        return {"reports": reports, "state_problem": None}

    return render(request, "nodes.html", **await _gather(gather))

